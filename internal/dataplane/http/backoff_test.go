package http

import (
	"testing"
	"time"
)

// Envoy's jittered exponential back-off (router docs, "x-envoy-max-retries":
// base 25ms, max 10x base; the wait before retry n is random in
// [0, (2^n - 1) * base), capped at max).
func TestBackoffLimit(t *testing.T) {
	for _, tc := range []struct {
		attempt   int
		base, max time.Duration
		want      time.Duration
	}{
		{0, retryBaseInterval, retryMaxInterval, 25 * time.Millisecond},
		{1, retryBaseInterval, retryMaxInterval, 75 * time.Millisecond},
		{2, retryBaseInterval, retryMaxInterval, 175 * time.Millisecond},
		{3, retryBaseInterval, retryMaxInterval, 250 * time.Millisecond},
		{40, retryBaseInterval, retryMaxInterval, 250 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond},
		{0, 0, 0, 1},
	} {
		if got := backoffLimit(tc.attempt, tc.base, tc.max); got != tc.want {
			t.Errorf("attempt %d, base %v, max %v: limit %v, want %v", tc.attempt, tc.base, tc.max, got, tc.want)
		}
	}
}
