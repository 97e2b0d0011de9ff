// Command abmedian summarizes an interleaved A/B run of bench/run.sh: for
// each variant, the shared harness's JSON results (schema
// loom-proxy-bench/v1) of one repetition each, direct plus that variant,
// taken in alternation so that the load of this shared machine falls on
// both variants alike. It prints, as markdown, each variant's medians over
// its runs (with min - max), and the medians of the paired differences
// (run i of a variant minus run i of the first), which cancel most of the
// load that changes between pairs.
//
//	go run ./bench/abmedian -results bench/results -group telemetry -variants none,full -stamp 20261202-1905
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// result is the part of loom-proxy-bench/v1 read here.
type result struct {
	Env struct {
		Load string `json:"loadavg_at_start"`
	} `json:"env"`
	Targets []struct {
		Name    string             `json:"name"`
		Valid   bool               `json:"valid"`
		Added   map[string]float64 `json:"added_latency_ms"`
		Metrics map[string]struct {
			Median float64 `json:"median"`
		} `json:"metrics"`
	} `json:"targets"`
}

// run is one repetition's figures for the variant.
type run struct {
	rep                      int // the repetition, N of the file's -rN
	load                     string
	valid                    bool
	vcpu, rss, p50, p90, p99 float64
	addP50, addP99           float64
	directP99, maxRPS        float64
}

func load(path string) (run, error) {
	var r result
	b, err := os.ReadFile(path)
	if err != nil {
		return run{}, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return run{}, fmt.Errorf("%s: %v", path, err)
	}
	out := run{load: r.Env.Load, valid: true}
	found := false
	for _, t := range r.Targets {
		m := func(k string) float64 { return t.Metrics[k].Median }
		out.valid = out.valid && t.Valid
		if t.Name == "direct" {
			out.directP99 = m("fixed.p99_ms")
			continue
		}
		found = true
		out.vcpu, out.rss = m("fixed.proxy_vcpu_per_1k_rps"), m("fixed.proxy_peak_rss_mib")
		out.p50, out.p90, out.p99 = m("fixed.p50_ms"), m("fixed.p90_ms"), m("fixed.p99_ms")
		out.addP50, out.addP99 = t.Added["p50"], t.Added["p99"]
		out.maxRPS = m("max.rps")
	}
	if !found {
		return run{}, fmt.Errorf("%s: no candidate target", path)
	}
	return out, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func spread(xs []float64, f string) string {
	if len(xs) == 0 {
		return "–"
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return fmt.Sprintf(f+" (%s – %s)", median(s), fmt.Sprintf(f, s[0]), fmt.Sprintf(f, s[len(s)-1]))
}

func col(rs []run, f func(run) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// paired is f(r) - f(the reference's run of the same repetition) for each
// run r of rs: runs of one repetition were taken next to each other.
func paired(ref, rs []run, f func(run) float64) []float64 {
	var out []float64
	for _, r := range rs {
		for _, q := range ref {
			if q.rep == r.rep {
				out = append(out, f(r)-f(q))
				break
			}
		}
	}
	return out
}

// repOf is N of a result file named ...-rN.json.
func repOf(path string) (int, error) {
	base := strings.TrimSuffix(filepath.Base(path), ".json")
	i := strings.LastIndex(base, "-r")
	if i < 0 {
		return 0, fmt.Errorf("%s: no -rN repetition in the name", path)
	}
	n, err := strconv.Atoi(base[i+2:])
	if err != nil {
		return 0, fmt.Errorf("%s: repetition %q: %v", path, base[i+2:], err)
	}
	return n, nil
}

// reps are the repetitions of rs, in order.
func reps(rs []run) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.rep)
	}
	return out
}

func main() {
	dir := flag.String("results", "bench/results", "results directory of bench/run.sh")
	group := flag.String("group", "", "measurement group, e.g. telemetry or route")
	variants := flag.String("variants", "", "comma-separated variants, the first is the reference")
	stamp := flag.String("stamp", "", "the run's stamp (file names loom-GROUP-VARIANT-STAMP-rN*.json)")
	flag.Parse()
	vs := strings.Split(*variants, ",")
	if *group == "" || *stamp == "" || len(vs) < 2 {
		fmt.Fprintln(os.Stderr, "abmedian: -group, -stamp and two or more -variants are required")
		os.Exit(2)
	}
	runs := map[string][]run{}
	for _, v := range vs {
		files, _ := filepath.Glob(filepath.Join(*dir, *group+"-"+v, "loom-"+*group+"-"+v+"-"+*stamp+"-r*.json"))
		for _, f := range files {
			r, err := load(f)
			if err == nil {
				r.rep, err = repOf(f)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "abmedian:", err)
				os.Exit(1)
			}
			runs[v] = append(runs[v], r)
		}
		if len(runs[v]) == 0 {
			fmt.Fprintf(os.Stderr, "abmedian: no results for %s-%s at stamp %s in %s\n", *group, v, *stamp, *dir)
			os.Exit(1)
		}
		slices.SortFunc(runs[v], func(a, b run) int { return a.rep - b.rep })
		// Pairs are by repetition: a variant missing one would pair the
		// wrong runs or drop some silently.
		if got, want := reps(runs[v]), reps(runs[vs[0]]); !slices.Equal(got, want) {
			fmt.Fprintf(os.Stderr, "abmedian: %s has repetitions %v, %s has %v\n", v, got, vs[0], want)
			os.Exit(1)
		}
	}
	fmt.Printf("### %s, run %s: medians over runs (min – max)\n\n", *group, *stamp)
	fmt.Println("| variant | runs | proxy vCPU / 1k rps | peak RSS MiB | p50 / p90 / p99 ms | added p50 / p99 ms | direct p99 ms | max rps |")
	fmt.Println("|---|---:|---|---|---|---|---|---|")
	for _, v := range vs {
		rs := runs[v]
		valid := ""
		for _, r := range rs {
			if !r.valid {
				valid = " (some run INVALID)"
			}
		}
		fmt.Printf("| %s%s | %d | %s | %s | %.3f / %.3f / %.3f | %s / %s | %s | %s |\n", v, valid, len(rs),
			spread(col(rs, func(r run) float64 { return r.vcpu }), "%.3f"),
			spread(col(rs, func(r run) float64 { return r.rss }), "%.1f"),
			median(col(rs, func(r run) float64 { return r.p50 })), median(col(rs, func(r run) float64 { return r.p90 })),
			median(col(rs, func(r run) float64 { return r.p99 })),
			spread(col(rs, func(r run) float64 { return r.addP50 }), "%+.3f"),
			spread(col(rs, func(r run) float64 { return r.addP99 }), "%+.3f"),
			spread(col(rs, func(r run) float64 { return r.directP99 }), "%.3f"),
			spread(col(rs, func(r run) float64 { return r.maxRPS }), "%.0f"))
	}
	ref := runs[vs[0]]
	for _, v := range vs[1:] {
		rs := runs[v]
		n := len(rs)
		dCPU := paired(ref, rs, func(r run) float64 { return r.vcpu })
		dP50 := paired(ref, rs, func(r run) float64 { return r.p50 })
		dP99 := paired(ref, rs, func(r run) float64 { return r.p99 })
		dAdd99 := paired(ref, rs, func(r run) float64 { return r.addP99 })
		fmt.Printf("\n%s minus %s, paired by repetition (%d pairs), median (min – max): vCPU / 1k rps %s; p50 %s ms; p99 %s ms; added p99 %s ms\n",
			v, vs[0], n, spread(dCPU, "%+.3f"), spread(dP50, "%+.3f"), spread(dP99, "%+.3f"), spread(dAdd99, "%+.3f"))
	}
	fmt.Println("\nLoad average at the start of each run (1/5/15 min):")
	for _, v := range vs {
		var ls []string
		for _, r := range runs[v] {
			ls = append(ls, r.load)
		}
		fmt.Printf("- %s: %s\n", v, strings.Join(ls, "; "))
	}
}
