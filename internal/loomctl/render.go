package loomctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// FormatResult renders one apply or delete result as kubectl does:
// "virtualservice.networking.istio.io/reviews configured",
// "authorizationpolicy.security.istio.io/deny-all created". A key it cannot
// parse is printed as it came.
func FormatResult(r Result) string {
	kind, nsName, ok := strings.Cut(r.Key, " ")
	if !ok {
		return r.Key + " " + r.Action
	}
	_, name, ok := strings.Cut(nsName, "/")
	if !ok {
		name = nsName
	}
	if k := config.Kind(kind); k == config.KindSecret || k == config.KindService {
		// The core group: kubectl prints "secret/NAME", "service/NAME".
		return fmt.Sprintf("%s/%s %s", strings.ToLower(kind), name, r.Action)
	}
	group := config.Group(config.Kind(kind))
	if group == "" {
		group = config.GroupNetworking
	}
	return fmt.Sprintf("%s.%s/%s %s", strings.ToLower(kind), group, name, r.Action)
}

// The states of one xDS type in proxy-status, istioctl's words.
const (
	StateSynced  = "SYNCED"
	StateNotSent = "NOT SENT"
	StateStale   = "STALE"
	StateNacked  = "NACKED"
)

// TypeState says how one type stands: NACKED when a NACK is outstanding,
// NOT SENT when nothing was sent, SYNCED when the last version sent was
// ACKed, STALE when it was sent and not (yet) ACKed.
func TypeState(t TypeStatus) string {
	switch {
	case t.Nacked != "":
		return StateNacked
	case t.Sent == "":
		return StateNotSent
	case t.Acked == t.Sent:
		return StateSynced
	}
	return StateStale
}

// ProxyName renders a node ID as istioctl names proxies: "reviews-v1.default".
// An ID it cannot parse is returned as is.
func ProxyName(id string) string {
	n, err := xdsapi.ParseNodeID(id)
	if err != nil {
		return id
	}
	return n.Name + "." + n.Namespace
}

// proxyStatusTypes are the table's xDS columns, in istioctl's order.
var proxyStatusTypes = []string{"CDS", "LDS", "EDS", "RDS"}

// WriteProxyStatus writes the proxy-status table of ss, one row per proxy
// with a column per xDS type, as istioctl proxy-status does; loomd is the
// control plane's address shown in the ISTIOD column. The errors of
// outstanding NACKs follow the table.
func WriteProxyStatus(w io.Writer, ss []SyncStatus, loomd string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLUSTER\tCDS\tLDS\tEDS\tRDS\tISTIOD\tVERSION")
	var nacks []string
	for _, s := range ss {
		name := ProxyName(s.ID)
		cols := []string{name, orDash(s.Cluster)}
		for _, short := range proxyStatusTypes {
			t, ok := findType(s.Types, short)
			if !ok {
				cols = append(cols, StateNotSent)
				continue
			}
			st := TypeState(t)
			cols = append(cols, st)
			if st == StateNacked {
				nacks = append(nacks, fmt.Sprintf("%s %s NACKED version %s: %s", name, short, t.Nacked, t.NackError))
			}
		}
		cols = append(cols, loomd, orDash(s.Version))
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write proxy status: %w", err)
	}
	if len(nacks) > 0 {
		fmt.Fprintln(w)
		for _, n := range nacks {
			if _, err := fmt.Fprintln(w, n); err != nil {
				return fmt.Errorf("write proxy status: %w", err)
			}
		}
	}
	return nil
}

func findType(ts []TypeStatus, short string) (TypeStatus, bool) {
	for _, t := range ts {
		if t.Short == short || (t.Short == "" && strings.HasSuffix(t.TypeURL, typeSuffix[short])) {
			return t, true
		}
	}
	return TypeStatus{}, false
}

var typeSuffix = map[string]string{
	"CDS": ".Cluster",
	"LDS": ".Listener",
	"EDS": ".ClusterLoadAssignment",
	"RDS": ".RouteConfiguration",
}

// AllSynced reports whether every type of every proxy in ss is SYNCED. It is
// false for an empty ss.
func AllSynced(ss []SyncStatus) bool {
	if len(ss) == 0 {
		return false
	}
	for _, s := range ss {
		for _, short := range proxyStatusTypes {
			t, ok := findType(s.Types, short)
			if !ok || TypeState(t) != StateSynced {
				return false
			}
		}
	}
	return true
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
