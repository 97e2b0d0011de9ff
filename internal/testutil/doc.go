// Package testutil holds small helpers shared by tests of both planes and of
// the end-to-end suite. It imports only the standard library, so importing
// it never crosses the plane boundary of DESIGN.md.
package testutil
