// Package archtest holds no code: its test keeps the dependency rules of
// DESIGN.md true, by asking `go list` for every package's dependencies.
package archtest
