package dashboard

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
)

// web holds index.html and, once `make ui` has run, the front-end bundle
// in dist/ (app.js, app.css). dist/ always holds its committed README.md
// and .gitignore, so the pattern matches on a fresh clone without npm.
//
//go:embed all:web
var web embed.FS

// bundleFile is the front end's entry point, built by `make ui`.
const bundleFile = "web/dist/app.js"

// BundleBuilt reports whether the front-end bundle was embedded: false in
// a binary built from a fresh clone without `make ui`.
func BundleBuilt() bool {
	_, err := fs.Stat(web, bundleFile)
	return err == nil
}

// notBuiltPage is served at / when the bundle is missing.
const notBuiltPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loom dashboard</title></head>
<body>
<h1>Loom dashboard</h1>
<p>The dashboard's front end was not built into this loomd: build it with <code>make build</code>
(it runs <code>npm ci</code> and esbuild in internal/dashboard/ui), then restart loomd.</p>
<p>The JSON API works without it: <a href="api/graph">/api/graph</a>, <a href="api/services">/api/services</a>,
<a href="api/workloads">/api/workloads</a>, <a href="api/proxies">/api/proxies</a>, <a href="api/config">/api/config</a>.</p>
</body></html>
`

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	if !BundleBuilt() {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(notBuiltPage))
		return
	}
	http.ServeFileFS(w, r, web, "web/index.html")
}

// staticHandler serves the files of web/dist under /dist/; directories
// are not listed.
func staticHandler() (http.Handler, error) {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		return nil, fmt.Errorf("dashboard: embedded assets: %w", err)
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	}), nil
}
