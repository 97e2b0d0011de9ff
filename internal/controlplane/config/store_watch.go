package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watch is Run with fsnotify.
func (s *Store) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config store: watch: %w", err)
	}
	defer w.Close()
	if err := s.watchTree(w, s.opts.Dir); err != nil {
		return fmt.Errorf("config store: watch %s: %w", s.opts.Dir, err)
	}
	// A change arriving between Load and the watch being set up would be
	// missed; one reread closes that gap.
	timer := time.NewTimer(s.opts.Debounce)
	defer timer.Stop()
	pending, first := true, time.Now()
	maxDelay := 5 * s.opts.Debounce
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !s.relevant(w, ev) {
				continue
			}
			now := time.Now()
			if !pending {
				pending, first = true, now
			}
			// Quiet period, but never later than maxDelay after the first
			// event, so a stream of writes cannot starve the reload.
			wait := s.opts.Debounce
			if d := first.Add(maxDelay).Sub(now); d < wait {
				wait = max(d, 0)
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(wait)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("watch error", "err", err)
		case <-timer.C:
			pending = false
			s.reloadAndLog()
		}
	}
}

// relevant reports whether ev may change the config, and starts watching
// new directories. Dot files (editor swap files) are ignored, except
// "..*" entries, whose changes are those of a ConfigMap volume.
func (s *Store) relevant(w *fsnotify.Watcher, ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	if strings.HasPrefix(base, "..") {
		// A Kubernetes ConfigMap or Secret volume: an update writes a new
		// "..<timestamp>" directory and renames a "..data_tmp" symlink
		// over "..data"; the visible files are symlinks through "..data"
		// and see no event of their own. These entries are never read as
		// config (readDir skips dot names) nor watched; they only say
		// that the files behind the symlinks changed.
		return true
	}
	if strings.HasPrefix(base, ".") {
		return false
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
			if err := s.watchTree(w, ev.Name); err != nil {
				s.log.Warn("watch new directory", "path", ev.Name, "err", err)
			}
			return true // it may already hold files
		}
	}
	// A removed or renamed directory has no extension; reread to be safe.
	return isYAML(ev.Name) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
}

func (s *Store) watchTree(w *fsnotify.Watcher, root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != root && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
}
