package analysis

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// Level is a message's level, Istio's diag.Level names.
type Level string

// The levels, most severe first.
const (
	Error   Level = "Error"
	Warning Level = "Warning"
	Info    Level = "Info"
)

// Message is one finding about one resource: Istio's diag.Message.
type Message struct {
	// Code and Name are Istio's: "IST0118", "PortNameIsNotUnderNamingConvention".
	Code, Name string
	Level      Level
	Resource   config.Key
	Source     config.Source
	// Text is the message as Istio words it.
	Text string
}

// String renders m as istioctl analyze prints it:
// "Info [IST0118] (Service default/web svc.yaml:3) Port name ...".
func (m Message) String() string {
	where := fmt.Sprintf("%s %s/%s", m.Resource.Kind, m.Resource.Namespace, m.Resource.Name)
	if s := m.Source.String(); s != "" {
		where += " " + s
	}
	return fmt.Sprintf("%s [%s] (%s) %s", m.Level, m.Code, where, m.Text)
}

// Analyzer inspects a whole config set.
type Analyzer interface {
	// Analyze returns its findings about snap; it must not modify snap.
	Analyze(snap *config.Snapshot) []Message
}

// Analyzers is every analyzer Loom has, in the order they run.
var Analyzers = []Analyzer{
	PortNameAnalyzer{},
}

// Analyze runs every analyzer over snap and returns their messages sorted
// by resource (kind, namespace, name) then code. It is safe for
// concurrent use and does not block.
func Analyze(snap *config.Snapshot) []Message {
	var out []Message
	for _, a := range Analyzers {
		out = append(out, a.Analyze(snap)...)
	}
	slices.SortStableFunc(out, func(a, b Message) int {
		return cmp.Or(
			cmp.Compare(a.Resource.Kind, b.Resource.Kind),
			cmp.Compare(a.Resource.Namespace, b.Resource.Namespace),
			cmp.Compare(a.Resource.Name, b.Resource.Name),
			cmp.Compare(a.Code, b.Code),
		)
	})
	return out
}
