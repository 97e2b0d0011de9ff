package ratelimit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.yaml.in/yaml/v3"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// DomainConfig is one configuration document of envoyproxy/ratelimit: a
// domain and its descriptors.
//
//	domain: productpage-ratelimit
//	descriptors:
//	  - key: PATH
//	    value: /productpage
//	    rate_limit: {unit: minute, requests_per_unit: 1}
//	  - key: PATH
//	    rate_limit: {unit: minute, requests_per_unit: 100}
type DomainConfig struct {
	Domain      string             `yaml:"domain"`
	Descriptors []DescriptorConfig `yaml:"descriptors"`
}

// DescriptorConfig is one entry of a descriptor list: a key, an optional
// value (none matches any value, each distinct value counted on its own; a
// value ending in "*" matches the values with that prefix), an optional
// limit and a nested list for the next entry of a request's descriptor.
type DescriptorConfig struct {
	Key         string             `yaml:"key"`
	Value       string             `yaml:"value,omitempty"`
	RateLimit   *RateLimitConfig   `yaml:"rate_limit,omitempty"`
	Descriptors []DescriptorConfig `yaml:"descriptors,omitempty"`
	// ShadowMode counts but never refuses: the descriptor's status is OK.
	ShadowMode bool `yaml:"shadow_mode,omitempty"`
	// DetailedMetric is accepted for compatibility; Loom keeps no
	// per-value metrics.
	DetailedMetric bool `yaml:"detailed_metric,omitempty"`
}

// RateLimitConfig is a descriptor's rate_limit block.
type RateLimitConfig struct {
	// Unit is second, minute, hour or day (any case).
	Unit            string `yaml:"unit,omitempty"`
	RequestsPerUnit uint32 `yaml:"requests_per_unit"`
	// Unlimited answers OK without counting; it takes no unit.
	Unlimited bool `yaml:"unlimited,omitempty"`
	// Name names the limit for Replaces and X-RateLimit headers.
	Name string `yaml:"name,omitempty"`
	// Replaces drops, for a request that matches this limit too, the
	// limits of these names.
	Replaces []Replace `yaml:"replaces,omitempty"`
}

// Replace names a limit another one replaces.
type Replace struct {
	Name string `yaml:"name"`
}

// Limit is one configured rate limit, as the service applies it.
type Limit struct {
	// Key is the descriptor path it was configured at, as envoyproxy/
	// ratelimit names it: "domain.key_value.key".
	Key        string
	Limit      *rlsv3.RateLimitResponse_RateLimit // unit and requests_per_unit, as reported
	Unlimited  bool
	ShadowMode bool
	Name       string
	Replaces   []string
	// Window is the unit in seconds: counters are fixed windows of it.
	Window int64
}

// node is one level of a domain's descriptor tree.
type node struct {
	children  map[string]*node // by "key_value", or "key" for a descriptor without value
	wildcards []string         // children keys ending in "*", in configuration order
	limit     *Limit
}

// Config is the rate limit configuration of every domain. It is immutable
// and safe for concurrent use.
type Config struct {
	domains map[string]*node
}

// Domains returns the configured domains, sorted.
func (c *Config) Domains() []string {
	out := make([]string, 0, len(c.domains))
	for d := range c.domains {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// NewConfig builds the configuration of docs; src names each document in
// errors (a file name). A domain may be defined once; within a level a
// key and value pair once, as envoyproxy/ratelimit requires.
func NewConfig(docs []*DomainConfig, src []string) (*Config, error) {
	c := &Config{domains: map[string]*node{}}
	for i, d := range docs {
		name := fmt.Sprintf("document %d", i)
		if i < len(src) {
			name = src[i]
		}
		if d.Domain == "" {
			return nil, fmt.Errorf("%s: domain: must not be empty", name)
		}
		if _, dup := c.domains[d.Domain]; dup {
			return nil, fmt.Errorf("%s: domain %q: defined twice", name, d.Domain)
		}
		root := &node{children: map[string]*node{}}
		if err := root.load(d.Domain+".", d.Descriptors); err != nil {
			return nil, fmt.Errorf("%s: domain %q: %w", name, d.Domain, err)
		}
		c.domains[d.Domain] = root
	}
	return c, nil
}

func (n *node) load(parent string, ds []DescriptorConfig) error {
	for _, d := range ds {
		if d.Key == "" {
			return errors.New("descriptor has an empty key")
		}
		k := d.Key
		if d.Value != "" {
			k += "_" + d.Value
		}
		full := parent + k
		if _, dup := n.children[k]; dup {
			return fmt.Errorf("duplicate descriptor composite key %q", full)
		}
		child := &node{children: map[string]*node{}}
		if rl := d.RateLimit; rl != nil {
			l, err := newLimit(full, rl, d.ShadowMode)
			if err != nil {
				return err
			}
			child.limit = l
		}
		if err := child.load(full+".", d.Descriptors); err != nil {
			return err
		}
		n.children[k] = child
		if strings.HasSuffix(k, "*") {
			n.wildcards = append(n.wildcards, k)
		}
	}
	return nil
}

func newLimit(key string, rl *RateLimitConfig, shadow bool) (*Limit, error) {
	l := &Limit{Key: key, Unlimited: rl.Unlimited, ShadowMode: shadow, Name: rl.Name}
	u, ok := loomv1alpha1.NormalUnit(rl.Unit)
	switch {
	case rl.Unlimited && ok:
		return nil, fmt.Errorf("%s: rate_limit: should not specify a unit when unlimited", key)
	case !rl.Unlimited && !ok:
		return nil, fmt.Errorf("%s: rate_limit.unit = %q: must be second, minute, hour or day", key, rl.Unit)
	}
	unit := rlsv3.RateLimitResponse_RateLimit_Unit(rlsv3.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(u)])
	l.Limit = &rlsv3.RateLimitResponse_RateLimit{Name: rl.Name, RequestsPerUnit: rl.RequestsPerUnit, Unit: unit}
	l.Window = loomv1alpha1.UnitSeconds[u]
	for _, r := range rl.Replaces {
		switch {
		case r.Name == "":
			return nil, fmt.Errorf("%s: rate_limit.replaces: should not have an empty name", key)
		case r.Name == rl.Name:
			return nil, fmt.Errorf("%s: rate_limit.replaces: should not name its own limit %q", key, r.Name)
		}
		l.Replaces = append(l.Replaces, r.Name)
	}
	return l, nil
}

// Limit returns the limit of descriptor d in domain, nil when none
// applies. As envoyproxy/ratelimit's GetLimit: each entry is looked up at
// its level as key_value, then as a key_value* prefix wildcard, then as
// the key alone (any value); the limit applies only when it is found at
// the level of the descriptor's last entry.
func (c *Config) Limit(domain string, d *ratelimitcommonv3.RateLimitDescriptor) *Limit {
	n := c.domains[domain]
	if n == nil {
		return nil
	}
	entries := d.GetEntries()
	for i, e := range entries {
		next := n.children[e.GetKey()+"_"+e.GetValue()]
		if next == nil {
			kv := e.GetKey() + "_" + e.GetValue()
			for _, w := range n.wildcards {
				if strings.HasPrefix(kv, strings.TrimSuffix(w, "*")) {
					next = n.children[w]
					break
				}
			}
		}
		if next == nil {
			next = n.children[e.GetKey()]
		}
		if next == nil {
			return nil
		}
		if i == len(entries)-1 {
			return next.limit
		}
		if len(next.children) == 0 {
			return nil // the request's descriptor is deeper than the config
		}
		n = next
	}
	return nil
}

// ParseConfig reads the documents of one YAML file (envoyproxy/ratelimit's
// format, one domain per document). Unknown keys are errors.
func ParseConfig(file string, data []byte) ([]*DomainConfig, error) {
	var out []*DomainConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	for {
		var d DomainConfig
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		out = append(out, &d)
	}
	return out, nil
}

// LoadConfigFiles reads path: a YAML file, or a directory whose *.yaml and
// *.yml files are read in name order. It returns the documents and the
// file each came from.
func LoadConfigFiles(path string) ([]*DomainConfig, []string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	files := []string{path}
	if fi.IsDir() {
		files = nil
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range ents {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		slices.Sort(files)
	}
	var docs []*DomainConfig
	var src []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		ds, err := ParseConfig(f, data)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range ds {
			docs = append(docs, d)
			src = append(src, f)
		}
	}
	return docs, src, nil
}
