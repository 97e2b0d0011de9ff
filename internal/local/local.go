package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loom-mesh/loom/internal/loomctl"
	"github.com/loom-mesh/loom/samples/bookinfo"
)

// Options configure the local mesh. The zero value of each field means its
// default.
type Options struct {
	// BinDir holds the loomd, loom-proxy and bookinfo binaries. Default: the
	// directory of the running executable, then PATH.
	BinDir string
	// ConfigDir is loomd's config directory; the mesh's files are written
	// into it (services.yaml, workloads.yaml, bookinfo-gateway.yaml),
	// replacing files of those names. Default: a new temporary directory.
	ConfigDir string
	// LogsDir gets one log file per child process. Default: "logs" beside a
	// temporary config directory, else a new temporary directory.
	LogsDir string
	// StateDir holds loomd's data directory (its CA and token registry,
	// "loomd") and the proxies' bootstrap token files ("workloads"), both
	// mode 0700. Default: beside a temporary config directory, else a new
	// temporary directory.
	StateDir string
	// Subnet is the loopback /24 the mesh's IPs are taken from. Default
	// "127.0.0.0/24".
	Subnet string
	// IngressPort is the port on 127.0.0.1 forwarded to the ingress
	// gateway's port 8080. Default 8080.
	IngressPort int
	// ReadyTimeout bounds the wait for the mesh to serve. Default 60 s.
	ReadyTimeout time.Duration
	// StopTimeout is how long children get to exit after SIGTERM before
	// they are killed. Default 5 s.
	StopTimeout time.Duration
	// Out gets the human-readable progress and the ready banner. Default
	// os.Stdout.
	Out io.Writer
	// Logger gets debug and warning messages. Default slog.Default().
	Logger *slog.Logger
	// Interception is how apps reach their sidecars: "none" (the default,
	// explicit mode: HTTP_PROXY, loopback addresses) or "redirect"
	// (transparent mode: a network namespace per workload with Istio's
	// iptables rules; root only). See docs/local-mode.md.
	Interception string
	// NetnsPrefix begins the name of every namespace, veth and bridge of
	// redirect mode; leftovers with this prefix are removed at start.
	// Default DefaultNetnsPrefix ("loom").
	NetnsPrefix string
	// NetnsSubnet is the IPv4 /24 of redirect mode's namespaces. Default
	// DefaultNetnsSubnet ("10.77.0.0/24").
	NetnsSubnet string
}

// Interception modes of Options.Interception.
const (
	InterceptionNone     = "none"
	InterceptionRedirect = "redirect"
)

// ReadyPrefix starts the line Run prints once the mesh serves; the product
// page's URL follows it.
const ReadyPrefix = "Bookinfo is ready: "

// Runtime is one local mesh. It is used by one goroutine: New, then Run
// once.
type Runtime struct {
	opts   Options
	prefix string
	bins   map[string]string // binary name -> path
	log    *slog.Logger
	// net is redirect mode's network (nil in explicit mode); ipBin and
	// its tools' paths are found by New.
	net   *netnsPlan
	ipBin string
}

// New checks opts and finds the binaries. It fails on a bad subnet or
// port, or when a binary is missing (the error says to run make build).
func New(opts Options) (*Runtime, error) {
	if opts.Subnet == "" {
		opts.Subnet = "127.0.0.0/24"
	}
	if opts.IngressPort == 0 {
		opts.IngressPort = 8080
	}
	if opts.IngressPort < 0 || opts.IngressPort > 65535 {
		return nil, fmt.Errorf("ingress port %d: must be 1-65535", opts.IngressPort)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 5 * time.Second
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	prefix, err := subnetPrefix(opts.Subnet)
	if err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for _, name := range []string{"loomd", "loom-proxy", "bookinfo"} {
		p, err := findBinary(opts.BinDir, name)
		if err != nil {
			return nil, err
		}
		bins[name] = p
	}
	r := &Runtime{opts: opts, prefix: prefix, bins: bins, log: opts.Logger.With("component", "local")}
	switch opts.Interception {
	case "", InterceptionNone:
	case InterceptionRedirect:
		if err := r.newNetns(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("interception %q: must be %s or %s", opts.Interception, InterceptionNone, InterceptionRedirect)
	}
	return r, nil
}

// newNetns checks what redirect mode needs (root, ip and iptables-restore)
// and plans its network: a namespace per Bookinfo workload with the
// sidecar's iptables rules, and one without for the ingress gateway.
func (r *Runtime) newNetns() error {
	if os.Geteuid() != 0 {
		return errors.New("--interception redirect needs root: it creates network namespaces, veth pairs, a bridge " +
			"and iptables rules (run it with sudo, or leave --interception out for explicit mode, which needs no root)")
	}
	var err error
	if r.ipBin, err = exec.LookPath("ip"); err != nil {
		return errors.New("--interception redirect needs the ip command (Debian: apt-get install iproute2; `make demo` installs it)")
	}
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		return errors.New("--interception redirect needs iptables-restore (Debian: apt-get install iptables; `make demo` installs it)")
	}
	n, err := newNetnsPlan(cmp.Or(r.opts.NetnsPrefix, DefaultNetnsPrefix), cmp.Or(r.opts.NetnsSubnet, DefaultNetnsSubnet))
	if err != nil {
		return err
	}
	for _, w := range bookinfo.Workloads {
		n.add(w.Name, w.HostOctet, true)
	}
	n.add(ingressName, ingressOctet, false)
	r.net = n
	return nil
}

// findBinary looks for name in binDir, or when binDir is empty in the
// running executable's directory and then PATH.
func findBinary(binDir, name string) (string, error) {
	if binDir != "" {
		p := filepath.Join(binDir, name)
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s not found in %s: run `make build` (it builds all binaries into ./bin)", name, binDir)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if isExecutable(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found beside loomctl nor in PATH: run `make build` (it builds all binaries into ./bin) or pass --bin-dir", name)
	}
	return p, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// layout is where the mesh's processes run.
func (r *Runtime) layout() layout {
	if r.net != nil {
		return netnsLayout(r.net)
	}
	return loopbackLayout(r.prefix)
}

func (r *Runtime) ip(octet int) string { return r.layout().ip(octet) }

// LoomdAddr is loomd's monitoring and API address in this mesh, as
// `loomctl --loomd` takes it.
func (r *Runtime) LoomdAddr() string { return r.layout().loomdIP + ":15014" }

// DashboardURL is the URL of loomd's dashboard in this mesh.
func (r *Runtime) DashboardURL() string { return "http://" + r.ip(loomdOctet) + ":20001/" }

// Run writes the config, starts every process, waits until the mesh
// serves, prints the ready banner, and then runs until ctx is cancelled
// (it returns nil) or a child exits (it returns an error with the tail of
// that child's log). On any return every child has been stopped: SIGTERM,
// then SIGKILL after Options.StopTimeout.
func (r *Runtime) Run(ctx context.Context) error {
	configDir, logsDir, stateDir, err := r.prepareDirs()
	if err != nil {
		return err
	}
	loomd, rest, proxies, tokens := planLayout(r.layout(), configDir, stateDir, randomSuffix)
	if err := mintTokens(stateDir, tokens); err != nil {
		return err
	}
	out := r.opts.Out
	if r.net != nil {
		if err := r.setupNetns(ctx); err != nil {
			return err
		}
		defer r.teardownNetns()
		fmt.Fprintf(out, "Loom demo mesh in network namespaces %s-* on %s (interception: redirect)\n  config: %s\n  logs:   %s\n  state:  %s\n",
			r.net.Prefix, r.net.Subnet, configDir, logsDir, stateDir)
	} else {
		fmt.Fprintf(out, "Loom demo mesh on %s\n  config: %s\n  logs:   %s\n  state:  %s\n", r.opts.Subnet, configDir, logsDir, stateDir)
	}

	fwdAddr := fmt.Sprintf("127.0.0.1:%d", r.opts.IngressPort)
	ln, err := net.Listen("tcp", fwdAddr)
	if err != nil {
		return fmt.Errorf("ingress port-forward: %w (choose another with --ingress-port)", err)
	}
	fwd := newForwarder(ln, r.ip(ingressOctet)+":8080", r.log)
	fwdDone := make(chan struct{})
	go func() { defer close(fwdDone); fwd.serve() }()
	defer func() { fwd.close(); <-fwdDone }()

	sup := &supervisor{logsDir: logsDir, exited: make(chan childExit, 32), log: r.log, stopTimeout: r.opts.StopTimeout, ipBin: r.ipBin}
	defer sup.stopAll()

	client := loomctl.NewClient(r.LoomdAddr(), &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}})

	readyCtx, cancelReady := context.WithTimeout(ctx, r.opts.ReadyTimeout)
	defer cancelReady()

	if err := sup.start(loomd, r.bins[loomd.Binary]); err != nil {
		return err
	}
	fmt.Fprintf(out, "Started loomd at %s (xDS %s:15010)\n", r.LoomdAddr(), r.layout().loomdIP)
	if err := r.waitFor(readyCtx, sup, "loomd /ready", func(ctx context.Context) (bool, string) {
		ok, err := client.Ready(ctx)
		if err != nil {
			return false, err.Error()
		}
		return ok, "loomd /ready is not 200"
	}); err != nil {
		return r.interrupted(ctx, err)
	}
	for _, p := range rest {
		if err := sup.start(p, r.bins[p.Binary]); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "Started %d workloads with sidecars and the ingress gateway at %s\n", len(bookinfo.Workloads), r.ip(ingressOctet))

	if err := r.waitFor(readyCtx, sup, "every proxy in sync", func(ctx context.Context) (bool, string) {
		ss, err := client.Syncz(ctx)
		if err != nil {
			return false, err.Error()
		}
		return proxiesSynced(ss, proxies)
	}); err != nil {
		return r.interrupted(ctx, err)
	}
	pageURL := fmt.Sprintf("http://%s/productpage", fwdAddr)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	if err := r.waitFor(readyCtx, sup, "GET "+pageURL, func(ctx context.Context) (bool, string) {
		return get200(ctx, hc, pageURL)
	}); err != nil {
		return r.interrupted(ctx, err)
	}
	cancelReady()
	r.printBanner(pageURL, configDir, logsDir)

	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "Stopping the mesh")
		return nil
	case ex := <-sup.exited:
		return sup.exitError(ex)
	}
}

// interrupted turns a wait failure into Run's result: nil when the user
// cancelled.
func (r *Runtime) interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		fmt.Fprintln(r.opts.Out, "Stopping the mesh")
		return nil
	}
	return err
}

// waitFor polls check every 200 ms until it reports true, ctx ends, or a
// child exits.
func (r *Runtime) waitFor(ctx context.Context, sup *supervisor, what string, check func(context.Context) (bool, string)) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		ok, why := check(ctx)
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: not ready after %s: %s", what, r.opts.ReadyTimeout, last)
		case ex := <-sup.exited:
			return sup.exitError(ex)
		case <-tick.C:
		}
	}
}

// proxiesSynced reports whether every wanted proxy is connected with all
// four types SYNCED, and if not, which is not, with the first NACK error
// of an unsynced proxy (a proxy that cannot serve its config says why).
func proxiesSynced(ss []loomctl.SyncStatus, want []proxyIdentity) (bool, string) {
	byID := map[string]loomctl.SyncStatus{}
	for _, s := range ss {
		byID[s.ID] = s
	}
	var missing, unsynced []string
	nack := ""
	for _, p := range want {
		s, ok := byID[p.NodeID]
		switch {
		case !ok:
			missing = append(missing, p.Name)
		case !loomctl.AllSynced([]loomctl.SyncStatus{s}):
			unsynced = append(unsynced, p.Name)
			for _, ts := range s.Types {
				if ts.NackError != "" && nack == "" {
					nack = fmt.Sprintf("; %s rejected %s: %s", p.Name, ts.Short, ts.NackError)
				}
			}
		}
	}
	if len(missing) == 0 && len(unsynced) == 0 {
		return true, ""
	}
	return false, fmt.Sprintf("not connected: [%s]; not synced: [%s]%s", strings.Join(missing, " "), strings.Join(unsynced, " "), nack)
}

func get200(ctx context.Context, hc *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, "status " + resp.Status
	}
	return true, ""
}

func (r *Runtime) printBanner(pageURL, configDir, logsDir string) {
	loomdFlag := ""
	if r.LoomdAddr() != loomctl.DefaultAddr {
		loomdFlag = " --loomd " + r.LoomdAddr()
	}
	base := strings.TrimSuffix(pageURL, "/productpage")
	samples := sampleDir()
	fmt.Fprintf(r.opts.Out, `
%s%s

  dashboard:  %s (loomctl%s dashboard)
  config dir: %s
  logs dir:   %s

Next:
  loomctl%s proxy-status
  loomctl%s apply -f %s/destination-rule-all.yaml
  loomctl%s apply -f %s/virtual-service-reviews-test-v2.yaml
  curl -s -c /tmp/loom-jar -d username=jason %s/login -o /dev/null
  curl -s -b /tmp/loom-jar %s/productpage | grep -o 'reviews-v[0-9]-[a-z0-9]*'

(the sample files are Istio's own, unchanged; README.md has a five-minute tour). Press Ctrl-C to stop.
`, ReadyPrefix, pageURL, r.DashboardURL(), loomdFlag, configDir, logsDir, loomdFlag, loomdFlag, samples, loomdFlag, samples, base, base)
}

// sampleDir is where Istio's bookinfo networking samples are, as a path the
// user can paste: ../shared/istio-samples/... when run from the project's
// root (as `make demo` does), else Istio's own path in its repository.
func sampleDir() string {
	const shared = "../shared/istio-samples/bookinfo/networking"
	if st, err := os.Stat(shared); err == nil && st.IsDir() {
		return shared
	}
	return "ISTIO_CHECKOUT/samples/bookinfo/networking"
}

// prepareDirs creates the config, logs and state directories and writes
// the mesh's config files.
func (r *Runtime) prepareDirs() (configDir, logsDir, stateDir string, err error) {
	configDir, logsDir, stateDir = r.opts.ConfigDir, r.opts.LogsDir, r.opts.StateDir
	if configDir == "" {
		base, err := os.MkdirTemp("", "loom-demo-")
		if err != nil {
			return "", "", "", fmt.Errorf("create config directory: %w", err)
		}
		configDir = filepath.Join(base, "config")
		if logsDir == "" {
			logsDir = filepath.Join(base, "logs")
		}
		if stateDir == "" {
			stateDir = filepath.Join(base, "state")
		}
	}
	if logsDir == "" {
		if logsDir, err = os.MkdirTemp("", "loom-demo-logs-"); err != nil {
			return "", "", "", fmt.Errorf("create logs directory: %w", err)
		}
	}
	if stateDir == "" {
		if stateDir, err = os.MkdirTemp("", "loom-demo-state-"); err != nil {
			return "", "", "", fmt.Errorf("create state directory: %w", err)
		}
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", "", "", fmt.Errorf("create state directory: %w", err)
	}
	for _, d := range []string{configDir, logsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", "", "", fmt.Errorf("create directory: %w", err)
		}
	}
	services, err := servicesYAML()
	if err != nil {
		return "", "", "", err
	}
	workloads := workloadEntriesYAML(r.prefix)
	if r.net != nil {
		// Transparent mode: services get VIPs (their names resolve to
		// them in every namespace) and workloads are REDIRECT.
		if services, r.net.Hosts, err = servicesWithVIPs(services); err != nil {
			return "", "", "", err
		}
		workloads = bookinfo.WorkloadEntriesYAMLAnnotated(strings.TrimSuffix(r.net.addr(0).String(), "0"),
			map[string]string{annotationInterceptionMode: "REDIRECT"})
	}
	files := map[string][]byte{
		"services.yaml":         services,
		"workloads.yaml":        workloads,
		"bookinfo-gateway.yaml": []byte(bookinfoGatewayYAML),
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(configDir, n), files[n], 0o644); err != nil {
			return "", "", "", fmt.Errorf("write config: %w", err)
		}
	}
	return configDir, logsDir, stateDir, nil
}

// childExit says that a child process ended.
type childExit struct {
	p       process
	logPath string
	err     error
}

// supervisor owns the child processes: it starts them, collects their
// exits and stops them. Only Run's goroutine calls its methods; the wait
// goroutines only send on exited and close done.
type supervisor struct {
	logsDir     string
	stopTimeout time.Duration
	// ipBin is the ip command, for children that run in a network
	// namespace (process.Netns).
	ipBin    string
	log      *slog.Logger
	exited   chan childExit // buffered for every child, so waiters never block
	children []*child
}

type child struct {
	p    process
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
}

func (s *supervisor) start(p process, bin string) error {
	logPath := filepath.Join(s.logsDir, p.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	cmd := exec.Command(bin, p.Args...)
	if p.Netns != "" {
		// ip netns exec execs the binary: the PID is the child's own.
		cmd = exec.Command(s.ipBin, append([]string{"netns", "exec", p.Netns, bin}, p.Args...)...)
	}
	cmd.Env = childEnv(p.HTTPProxy)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	s.log.Debug("started", "name", p.Name, "pid", cmd.Process.Pid, "args", p.Args)
	c := &child{p: p, cmd: cmd, done: make(chan struct{})}
	s.children = append(s.children, c)
	go func() {
		err := cmd.Wait()
		f.Close()
		close(c.done)
		select {
		case s.exited <- childExit{p: p, logPath: logPath, err: err}:
		default: // nobody is waiting any more: we are stopping
		}
	}()
	return nil
}

// exitError describes a child that exited on its own, with its log's tail.
func (s *supervisor) exitError(ex childExit) error {
	status := "exited"
	if ex.err != nil {
		status = ex.err.Error()
	}
	return fmt.Errorf("%s stopped early (%s); the mesh was stopped. Last lines of %s:\n%s",
		ex.p.Name, status, ex.logPath, tail(ex.logPath, 20))
}

// stopAll sends SIGTERM to every child still running, waits up to
// stopTimeout, then SIGKILLs the rest and waits for them.
func (s *supervisor) stopAll() {
	for _, c := range s.children {
		if !exited(c) {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	grace, cancel := context.WithTimeout(context.Background(), s.stopTimeout)
	defer cancel()
	for _, c := range s.children {
		select {
		case <-c.done:
		case <-grace.Done():
		}
	}
	for _, c := range s.children {
		if !exited(c) {
			s.log.Warn("killing child that ignored SIGTERM", "name", c.p.Name, "pid", c.cmd.Process.Pid)
			_ = c.cmd.Process.Kill()
		}
	}
	for _, c := range s.children {
		<-c.done
	}
	s.children = nil
}

func exited(c *child) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// forwarder copies TCP connections from a local listener to one target,
// as kubectl port-forward does.
type forwarder struct {
	ln     net.Listener
	target string
	log    *slog.Logger

	wg sync.WaitGroup
	// mu guards the fields below.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newForwarder(ln net.Listener, target string, log *slog.Logger) *forwarder {
	return &forwarder{ln: ln, target: target, log: log, conns: map[net.Conn]struct{}{}}
}

// serve accepts until close; it returns once every connection's copiers
// are done.
func (f *forwarder) serve() {
	defer f.wg.Wait()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Warn("port-forward accept", "err", err)
			}
			return
		}
		if !f.track(c) {
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			f.pipe(c)
		}()
	}
}

func (f *forwarder) pipe(down net.Conn) {
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		f.log.Debug("port-forward dial", "target", f.target, "err", err)
		return
	}
	if !f.track(up) {
		up.Close()
		return
	}
	defer f.untrack(up)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(up, down)
		closeWrite(up)
	}()
	_, _ = io.Copy(down, up)
	closeWrite(down)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// close stops accepting and closes every open connection.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	f.closed = true
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
