package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
)

// How often the token registry is re-read: at once when its directory
// changes; after a token that matches nothing, at most once per
// tokenMissReload; and in any case after tokenMaxAge, which bounds how long
// a revoked token (a removed file) may still be honoured when the
// directory's modification time did not move (file systems with coarse
// timestamps).
const (
	tokenMissReload = time.Second
	tokenMaxAge     = 10 * time.Second
)

// TokenAuthenticator authenticates local-mode callers by bootstrap token
// (internal/bootstraptoken): the gRPC metadata "authorization: Bearer
// TOKEN", whose SHA-256 must equal an entry of the registry directory. The
// caller is the entry's namespace and service account. The token's hash is
// compared with every entry in constant time. Tokens are never logged nor
// put into errors. Safe for concurrent use.
type TokenAuthenticator struct {
	dir string
	log *slog.Logger

	state atomic.Pointer[tokenState]
	// mu serialises reloads.
	mu sync.Mutex
}

var _ Authenticator = (*TokenAuthenticator)(nil)

// tokenState is one reading of the registry. Immutable.
type tokenState struct {
	modTime  time.Time
	loadedAt time.Time
	entries  []tokenEntry
}

type tokenEntry struct {
	sum    [sha256.Size]byte
	caller Caller
}

// NewTokenAuthenticator reads the registry in dir, creating dir (mode
// 0700) when missing and refusing one that group or others may access.
// Entries that do not decode are logged (by file name) and skipped.
func NewTokenAuthenticator(dir string, log *slog.Logger) (*TokenAuthenticator, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ensurePrivateDir(dir, "token registry"); err != nil {
		return nil, err
	}
	a := &TokenAuthenticator{dir: dir, log: log.With("component", "ca-tokens")}
	st, err := a.load()
	if err != nil {
		return nil, err
	}
	a.state.Store(st)
	return a, nil
}

// load reads the registry.
func (a *TokenAuthenticator) load() (*tokenState, error) {
	fi, err := os.Stat(a.dir)
	if err != nil {
		return nil, fmt.Errorf("token registry: %w", err)
	}
	entries, bad, err := bootstraptoken.LoadRegistry(a.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range bad {
		a.log.Warn("token registry entry skipped", "err", e)
	}
	st := &tokenState{modTime: fi.ModTime(), loadedAt: time.Now()}
	for _, e := range entries {
		var te tokenEntry
		sum, _ := hex.DecodeString(e.SHA256) // checked by LoadRegistry
		copy(te.sum[:], sum)
		via := "bootstrap token " + strings.TrimSuffix(filepath.Base(e.File), ".json")
		te.caller = Caller{Namespace: e.Namespace, ServiceAccount: e.ServiceAccount, Via: via}
		st.entries = append(st.entries, te)
	}
	return st, nil
}

// current returns the registry, re-read when it is stale (see
// tokenMissReload). miss says the caller found no match in the last one.
func (a *TokenAuthenticator) current(miss bool) *tokenState {
	st := a.state.Load()
	fi, err := os.Stat(a.dir)
	age := time.Since(st.loadedAt)
	stale := err == nil && !fi.ModTime().Equal(st.modTime) || age > tokenMaxAge || miss && age > tokenMissReload
	if !stale {
		return st
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := a.state.Load(); cur != st {
		return cur // reloaded meanwhile
	}
	next, err := a.load()
	if err != nil {
		// The last good registry keeps serving.
		a.log.Error("token registry reload failed", "err", err)
		return st
	}
	a.state.Store(next)
	return next
}

// Authenticate implements Authenticator.
func (a *TokenAuthenticator) Authenticate(ctx context.Context) (Caller, error) {
	tok, err := bearerToken(ctx)
	if err != nil {
		return Caller{}, err
	}
	sum := bootstraptoken.Hash(tok)
	if c, ok := match(a.current(false), sum); ok {
		return c, nil
	}
	if c, ok := match(a.current(true), sum); ok {
		return c, nil
	}
	return Caller{}, fmt.Errorf("%w: bootstrap token not in the registry %s", ErrUnauthenticated, a.dir)
}

// match compares sum with every entry in constant time, without an early
// exit.
func match(st *tokenState, sum [sha256.Size]byte) (Caller, bool) {
	found := -1
	for i := range st.entries {
		if subtle.ConstantTimeCompare(sum[:], st.entries[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Caller{}, false
	}
	return st.entries[found].caller, true
}

// bearerToken is the token of the request's "authorization: Bearer TOKEN"
// metadata, as Istio's agent sends its credential.
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", fmt.Errorf("%w: want one authorization metadata value, got %d", ErrUnauthenticated, len(vals))
	}
	const prefix = "Bearer "
	if len(vals[0]) <= len(prefix) || !strings.EqualFold(vals[0][:len(prefix)], prefix) {
		return "", fmt.Errorf("%w: authorization is not a Bearer token", ErrUnauthenticated)
	}
	return strings.TrimSpace(vals[0][len(prefix):]), nil
}
