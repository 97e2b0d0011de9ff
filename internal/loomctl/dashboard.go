package loomctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
)

// Browser opens url in the user's browser, or says why it cannot.
type Browser func(url string) error

// OpenBrowser opens url with the platform's opener (xdg-open with a
// display on Linux and the BSDs, open on macOS, rundll32 on Windows),
// without waiting for the browser. It fails when there is no display or
// no opener.
func OpenBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
			return errors.New("no display")
		}
		p, err := exec.LookPath("xdg-open")
		if err != nil {
			return errors.New("no xdg-open")
		}
		cmd = exec.Command(p, url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait() // reap the opener; the browser outlives it
	return nil
}

// Dashboard asks loomd for its dashboard's URL, prints it on out and, when
// open is set, opens it with browser; a browser that cannot be opened is
// only reported. Errors are those of Client.DashboardURL.
func Dashboard(ctx context.Context, c *Client, open bool, browser Browser, out io.Writer) error {
	u, err := c.DashboardURL(ctx)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.StatusCode == 404 {
			return fmt.Errorf("loomd at %s serves no dashboard: start it with --dashboard-addr", c.Addr())
		}
		return err
	}
	fmt.Fprintf(out, "Loom dashboard: %s\n", u)
	if !open {
		return nil
	}
	if err := browser(u); err != nil {
		fmt.Fprintf(out, "(not opening a browser: %v; open the URL yourself)\n", err)
	}
	return nil
}
