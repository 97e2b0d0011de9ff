package ca

import (
	"io"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type spiffeID = spiffeid.ID

var spiffeTD = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
