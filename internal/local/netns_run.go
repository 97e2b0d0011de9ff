package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// annotationInterceptionMode is Istio's annotation of a workload's
// interception mode, written on every WorkloadEntry of redirect mode.
const annotationInterceptionMode = "sidecar.istio.io/interceptionMode"

// netnsEtc is where `ip netns exec NAME` finds the files it bind-mounts
// over /etc (Linux's ip-netns(8) convention).
const netnsEtc = "/etc/netns"

// commandTimeout bounds one ip or iptables command.
const commandTimeout = 10 * time.Second

// run runs c and returns its error with its output.
func (r *Runtime) run(ctx context.Context, c command) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	if c.Stdin != "" {
		cmd.Stdin = strings.NewReader(c.Stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", c, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// setupNetns removes leftovers of a mesh with the same prefix, then builds
// the namespaces, veths, bridge and iptables rules, and writes each
// namespace's hosts file. On failure it removes what it built.
func (r *Runtime) setupNetns(ctx context.Context) error {
	r.removeStale(ctx)
	for _, c := range r.net.setupCommands() {
		r.log.Debug("netns", "command", c.String())
		if _, err := r.run(ctx, c); err != nil {
			r.teardownNetns()
			return fmt.Errorf("set up network namespaces: %w", err)
		}
	}
	for _, w := range r.net.Namespaces {
		dir := filepath.Join(netnsEtc, w.Name)
		err := os.MkdirAll(dir, 0o755)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "hosts"), r.net.hostsFile(w), 0o644)
		}
		if err != nil {
			r.teardownNetns()
			return fmt.Errorf("write the hosts file of %s: %w", w.Name, err)
		}
	}
	return nil
}

// removeStale deletes every namespace, veth and bridge named with the
// prefix, and their /etc/netns directories: what a mesh that did not stop
// cleanly left. Failures are logged: setup reports what still conflicts.
func (r *Runtime) removeStale(ctx context.Context) {
	netns, err := r.run(ctx, command{Args: []string{"ip", "netns", "list"}})
	if err != nil {
		r.log.Warn("list network namespaces", "error", err)
	}
	links, err := r.run(ctx, command{Args: []string{"ip", "-o", "link", "show"}})
	if err != nil {
		r.log.Warn("list links", "error", err)
	}
	cmds := r.net.staleCommands(netns, links)
	if len(cmds) > 0 {
		fmt.Fprintf(r.opts.Out, "Removing %d leftovers of an earlier %s-* mesh\n", len(cmds), r.net.Prefix)
	}
	for _, c := range cmds {
		if _, err := r.run(ctx, c); err != nil {
			r.log.Warn("remove leftover", "error", err)
		}
	}
	r.removeEtc()
}

// removeEtc removes /etc/netns/PREFIX-* directories.
func (r *Runtime) removeEtc() {
	dirs, _ := filepath.Glob(filepath.Join(netnsEtc, r.net.Prefix+"-*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			r.log.Warn("remove", "dir", d, "error", err)
		}
	}
}

// teardownNetns removes every namespace, veth and the bridge of the plan,
// by name, and the hosts files. Objects already gone are not errors.
func (r *Runtime) teardownNetns() {
	ctx := context.Background()
	for _, c := range r.net.teardownCommands() {
		if out, err := r.run(ctx, c); err != nil && !isGone(out) {
			r.log.Warn("tear down", "error", err)
		}
	}
	r.removeEtc()
}

// isGone reports whether ip's output says the object does not exist.
func isGone(out string) bool {
	return strings.Contains(out, "Cannot find device") || strings.Contains(out, "No such file") ||
		strings.Contains(out, "does not exist")
}
