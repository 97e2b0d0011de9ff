package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A harness result of one repetition is read into the candidate's figures
// and the direct target's p99; medians and paired differences are over
// runs.
func TestLoadMedianPaired(t *testing.T) {
	js := `{"schema":"loom-proxy-bench/v1","name":"n","env":{"loadavg_at_start":"1.00 2.00 3.00"},
	 "targets":[{"name":"direct","valid":true,"metrics":{"fixed.p99_ms":{"median":0.5}}},
	  {"name":"loom-full","valid":true,"added_latency_ms":{"p50":0.1,"p90":0.2,"p99":0.7},
	   "metrics":{"fixed.proxy_vcpu_per_1k_rps":{"median":0.31},"fixed.p99_ms":{"median":1.2},"max.rps":{"median":9000}}}]}`
	p := filepath.Join(t.TempDir(), "r1.json")
	if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !r.valid || r.vcpu != 0.31 || r.p99 != 1.2 || r.addP99 != 0.7 || r.directP99 != 0.5 || r.maxRPS != 9000 || r.load != "1.00 2.00 3.00" {
		t.Fatalf("load: %+v", r)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median of 3 = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4 = %v", m)
	}
	ref := []run{{rep: 1, vcpu: 1}, {rep: 2, vcpu: 2}, {rep: 3, vcpu: 3}}
	got := paired(ref, []run{{rep: 1, vcpu: 1.5}, {rep: 2, vcpu: 2.1}}, func(r run) float64 { return r.vcpu })
	if len(got) != 2 || got[0] != 0.5 || got[1] < 0.0999 || got[1] > 0.1001 {
		t.Errorf("paired = %v, want [0.5 0.1]", got)
	}
	// Repetitions come from the file name, numerically (r10 after r2).
	for name, want := range map[string]int{"loom-telemetry-full-20261202-1918-r2.json": 2, "loom-route-plain-x-r10.json": 10} {
		if n, err := repOf(name); err != nil || n != want {
			t.Errorf("repOf(%q) = %d, %v; want %d", name, n, err, want)
		}
	}
	if _, err := repOf("loom-telemetry-full.json"); err == nil {
		t.Error("a name without -rN has a repetition")
	}
	if _, err := load(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("a missing file loads")
	}
	noCand := filepath.Join(t.TempDir(), "d.json")
	os.WriteFile(noCand, []byte(`{"targets":[{"name":"direct","valid":true,"metrics":{}}]}`), 0o644)
	if _, err := load(noCand); err == nil {
		t.Error("a result without a candidate loads")
	}
}
