package loomctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/loom-mesh/loom/internal/controlplane/analysis"
	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
)

// ErrReported is returned by the command functions when they have already
// printed what went wrong; the command exits 1 without printing it again.
var ErrReported = errors.New("errors reported")

// Operation is what ApplyFiles asks loomd to do with each file.
type Operation int

// The operations of ApplyFiles.
const (
	OpApply Operation = iota
	OpDelete
)

// ApplyFiles sends each file (see ExpandFiles) to loomd, one request per
// file, and prints a kubectl-style line per resource on out. A file loomd
// rejects has its error lines printed on errOut and the other files are
// still sent; the result is then ErrReported. It stops at the first file
// when loomd is unreachable and returns *UnreachableError.
func ApplyFiles(ctx context.Context, c *Client, op Operation, paths []string, out, errOut io.Writer) error {
	files, err := ExpandFiles(paths)
	if err != nil {
		return err
	}
	failed := false
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read %s: %w", f, err)
		}
		var rs []Result
		if op == OpDelete {
			rs, err = c.Delete(ctx, f, data)
		} else {
			rs, err = c.Apply(ctx, f, data)
		}
		var ae *APIError
		if errors.As(err, &ae) {
			failed = true
			if len(ae.Lines) == 0 {
				fmt.Fprintf(errOut, "%s: loomd answered %d with no detail\n", f, ae.StatusCode)
			}
			for _, l := range ae.Lines {
				fmt.Fprintln(errOut, l)
			}
			continue
		}
		if err != nil {
			return err
		}
		for _, r := range rs {
			fmt.Fprintln(out, FormatResult(r))
		}
	}
	if failed {
		return ErrReported
	}
	return nil
}

// ValidateCommand validates the files offline (see ValidateFiles), prints
// each problem on out as "FILE:LINE: KIND NS/NAME: FIELD: MSG", or
// "✔ N resources valid" when there is none. It returns ErrReported when
// there are problems.
func ValidateCommand(paths []string, out io.Writer) error {
	n, problems, err := ValidateFiles(paths)
	if err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(out, p.Error())
	}
	if len(problems) > 0 {
		return ErrReported
	}
	fmt.Fprintf(out, "✔ %d resources valid\n", n)
	return nil
}

// AnalyzeCommand runs Loom's analyzers (package analysis) over the files,
// offline, as istioctl analyze -f does, and prints each message in
// istioctl's form ("Info [IST0118] (Service default/web f.yaml:3) ...").
// Resources that do not decode or validate (ValidateAll, cross-file checks
// included) are printed first, as validate prints them, and left out of
// the analysis. It returns ErrReported when any of those or an
// Error-level message was printed.
func AnalyzeCommand(paths []string, out io.Writer) error {
	rs, problems, err := decodeFiles(paths)
	if err != nil {
		return err
	}
	// The problems are ValidateAll's, as validate reports them, cross-file
	// ones included; a resource is left out when a problem names its
	// source and key (a duplicate's second definition, not its first).
	type at struct {
		src config.Source
		key config.Key
	}
	errs := validation.ValidateAll(rs)
	bad := make(map[at]bool, len(errs))
	for _, e := range errs {
		bad[at{e.Source, e.Key}] = true
	}
	problems = append(problems, errs...)
	var valid []*config.Resource
	for _, r := range rs {
		if !bad[at{r.Source, r.Key()}] {
			valid = append(valid, r)
		}
	}
	for _, p := range problems {
		fmt.Fprintln(out, p.Error())
	}
	failed := len(problems) > 0
	msgs := analysis.Analyze(config.NewSnapshot(0, valid))
	for _, m := range msgs {
		fmt.Fprintln(out, m.String())
		failed = failed || m.Level == analysis.Error
	}
	if failed {
		return ErrReported
	}
	if len(msgs) == 0 {
		fmt.Fprintf(out, "✔ No validation issues found when analyzing %d resources.\n", len(valid))
	}
	return nil
}

// ValidateAgainstMesh asks loomd to validate each file as if it were applied
// to the running mesh (POST /api/v1/validate: nothing is applied) and prints
// problems as ValidateCommand does. It returns *UnreachableError, before
// printing anything, when loomd does not answer, so the caller can fall
// back to ValidateCommand.
func ValidateAgainstMesh(ctx context.Context, c *Client, paths []string, out io.Writer) error {
	files, err := ExpandFiles(paths)
	if err != nil {
		return err
	}
	type answer struct {
		n     int
		lines []string
	}
	answers := make([]answer, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read %s: %w", f, err)
		}
		rs, err := c.Validate(ctx, f, data)
		var ae *APIError
		switch {
		case errors.As(err, &ae):
			lines := ae.Lines
			if len(lines) == 0 {
				lines = []string{fmt.Sprintf("%s: loomd answered %d with no detail", f, ae.StatusCode)}
			}
			answers = append(answers, answer{lines: lines})
		case err != nil:
			return err
		default:
			answers = append(answers, answer{n: len(rs)})
		}
	}
	n, failed := 0, false
	for _, a := range answers {
		n += a.n
		for _, l := range a.lines {
			failed = true
			fmt.Fprintln(out, l)
		}
	}
	if failed {
		return ErrReported
	}
	fmt.Fprintf(out, "✔ %d resources valid against the mesh at %s\n", n, c.Addr())
	return nil
}
