package loomctl

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
)

// ExpandFiles turns the -f arguments into a list of files: a file is kept
// as given; a directory gives its *.yaml, *.yml and *.json files, walked
// recursively in lexical order. It fails on a path that does not exist and
// on a directory with no such file.
func ExpandFiles(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read directory %s: %w", p, err)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("directory %s: no .yaml, .yml or .json file", p)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// ValidateFiles decodes the files (see ExpandFiles) and validates all their
// resources together, offline, as loomd would before applying them: a
// VirtualService may use a subset of a DestinationRule in another of the
// files. It returns how many resources were read and every problem found,
// decode problems first; err is only for files it cannot read.
func ValidateFiles(paths []string) (n int, problems config.Errors, err error) {
	all, problems, err := decodeFiles(paths)
	if err != nil {
		return 0, nil, err
	}
	problems = append(problems, validation.ValidateAll(all)...)
	return len(all), problems, nil
}

// decodeFiles decodes the files (see ExpandFiles): the resources read and
// the decode problems; err is only for files it cannot read.
func decodeFiles(paths []string) ([]*config.Resource, config.Errors, error) {
	files, err := ExpandFiles(paths)
	if err != nil {
		return nil, nil, err
	}
	var all []*config.Resource
	var problems config.Errors
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", f, err)
		}
		rs, errs := config.Decode(f, data)
		all = append(all, rs...)
		problems = append(problems, errs...)
	}
	return all, problems, nil
}
