package localratelimit

import (
	"container/list"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// defaultMaxDynamicDescriptors is Envoy's max_dynamic_descriptors default.
const defaultMaxDynamicDescriptors = 20

// descriptors parses LocalRateLimit.descriptors, strictest first.
func descriptors(ds []*ratelimitcommonv3.LocalRateLimitDescriptor) ([]Descriptor, error) {
	var out []Descriptor
	seen := map[string]bool{}
	for i, d := range ds {
		p := fmt.Sprintf("descriptors[%d]", i)
		if d == nil || len(d.GetEntries()) == 0 {
			return nil, fmt.Errorf("%s.entries: must not be empty", p)
		}
		var nd Descriptor
		for j, e := range d.GetEntries() {
			if e.GetKey() == "" {
				return nil, fmt.Errorf("%s.entries[%d].key: must not be empty", p, j)
			}
			nd.Entries = append(nd.Entries, filter.DescriptorEntry{Key: e.GetKey(), Value: e.GetValue()})
			nd.wildcard = nd.wildcard || e.GetValue() == ""
		}
		if d.GetTokenBucket() == nil {
			return nil, fmt.Errorf("%s.token_bucket: must be set", p)
		}
		tb, err := tokenBucket(d.GetTokenBucket())
		if err != nil {
			return nil, fmt.Errorf("%s.%w", p, err)
		}
		nd.Bucket, nd.ShadowMode = *tb, d.GetShadowMode()
		k := entriesKey(nd.Entries)
		if seen[k] {
			return nil, fmt.Errorf("%s: duplicate descriptor %s", p, k)
		}
		seen[k] = true
		out = append(out, nd)
	}
	// Envoy consumes the matched descriptors' tokens strictest first, so
	// that a request a strict bucket refuses takes no token from a laxer
	// one.
	slices.SortStableFunc(out, func(a, b Descriptor) int {
		ra := float64(a.Bucket.TokensPerFill) / a.Bucket.FillInterval.Seconds()
		rb := float64(b.Bucket.TokensPerFill) / b.Bucket.FillInterval.Seconds()
		switch {
		case ra < rb:
			return -1
		case ra > rb:
			return 1
		}
		return 0
	})
	return out, nil
}

// entriesKey renders entries as "(k=v,k2=v2)" for errors and map keys.
func entriesKey(es []filter.DescriptorEntry) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, e := range es {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(e.Value)
	}
	b.WriteByte(')')
	return b.String()
}

// matches says whether request descriptor rd has d's keys in order, with
// d's values where d has one.
func (d *Descriptor) matches(rd filter.Descriptor) bool {
	if len(rd.Entries) != len(d.Entries) {
		return false
	}
	for i, e := range d.Entries {
		re := rd.Entries[i]
		if re.Key != e.Key || (e.Value != "" && re.Value != e.Value) {
			return false
		}
	}
	return true
}

// bucketFor returns the bucket of request descriptor rd, which matches d.
func (d *Descriptor) bucketFor(rd filter.Descriptor) *bucket {
	if !d.wildcard {
		return d.bucket
	}
	var b strings.Builder
	for i, e := range d.Entries {
		if e.Value == "" {
			b.WriteString(rd.Entries[i].Value)
			b.WriteByte(0)
		}
	}
	return d.dynamic.get(b.String())
}

// take takes the tokens r needs: one from each of c's descriptors that one
// of r's descriptors matches, strictest first, then from the default bucket
// when none matched or AlwaysConsumeDefault. It stops at the first bucket
// that is empty (unless its descriptor is in shadow mode) and returns
// false with the wait until that bucket's next fill.
func (c *Config) take(r *http.Request, st *filter.State, serviceCluster string) (bool, time.Duration) {
	matched := false
	if len(c.Descriptors) > 0 && st != nil && st.Route != nil && st.Route.RateLimits != nil {
		in := filter.DescriptorInput{ServiceCluster: serviceCluster, Cluster: st.Route.Cluster, XFF: st.XFF}
		rds := st.Route.RateLimits.Descriptors(nil, c.Stage, c.VHRateLimits, r, &in)
		for i := range c.Descriptors {
			d := &c.Descriptors[i]
			for _, rd := range rds {
				if !d.matches(rd) {
					continue
				}
				matched = true
				if ok, wait := d.bucketFor(rd).take(); !ok && !d.ShadowMode {
					return false, wait
				}
				break
			}
		}
	}
	if c.bucket != nil && (!matched || c.AlwaysConsumeDefault) {
		return c.bucket.take()
	}
	return true, 0
}

// dynamicBuckets are the buckets of one wildcard descriptor, one per
// distinct value, at most max of them; the least recently used goes first.
// mu is held for a map lookup and a list move per request.
type dynamicBuckets struct {
	tb  TokenBucket
	max int
	now func() time.Time

	// mu guards the fields below.
	mu    sync.Mutex
	byKey map[string]*list.Element // of *dynamicEntry
	lru   list.List                // front: most recently used
}

type dynamicEntry struct {
	key string
	b   *bucket
}

func newDynamicBuckets(tb TokenBucket, max int, now func() time.Time) *dynamicBuckets {
	return &dynamicBuckets{tb: tb, max: max, now: now, byKey: map[string]*list.Element{}}
}

// get returns key's bucket, made full when new.
func (d *dynamicBuckets) get(key string) *bucket {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.byKey[key]; ok {
		d.lru.MoveToFront(el)
		return el.Value.(*dynamicEntry).b
	}
	if d.lru.Len() >= d.max {
		old := d.lru.Back()
		d.lru.Remove(old)
		delete(d.byKey, old.Value.(*dynamicEntry).key)
	}
	e := &dynamicEntry{key: key, b: newBucket(d.tb, d.now)}
	d.byKey[key] = d.lru.PushFront(e)
	return e.b
}
