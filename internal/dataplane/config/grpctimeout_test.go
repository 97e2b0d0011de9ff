package config

import (
	"math"
	"testing"
	"time"
)

func TestGRPCTimeoutHeaderValues(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1H", time.Hour, true}, {"2M", 2 * time.Minute, true}, {"3S", 3 * time.Second, true},
		{"250m", 250 * time.Millisecond, true}, {"7u", 7 * time.Microsecond, true}, {"9n", 9, true},
		{"99999999S", 99999999 * time.Second, true},
		// Past 2562047 hours nanoseconds overflow: the longest duration,
		// never a negative one that would disable the route's cap.
		{"3000000H", math.MaxInt64, true}, {"99999999H", math.MaxInt64, true},
		{"", 0, false}, {"S", 0, false}, {"100", 0, false}, {"1s", 0, false}, {"-1S", 0, false},
		{"123456789S", 0, false}, // more than 8 digits
	} {
		got, ok := ParseGRPCTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseGRPCTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{150 * time.Millisecond, "150m"}, {time.Microsecond, "1m"}, {99999999 * time.Millisecond, "99999999m"},
		{100000000 * time.Millisecond, "100000S"}, {1000 * time.Hour, "3600000S"},
	} {
		if got := FormatGRPCTimeout(tt.in); got != tt.want {
			t.Errorf("FormatGRPCTimeout(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGRPCTimeoutFinal(t *testing.T) {
	for _, tt := range []struct {
		g      GRPCTimeout
		header string
		want   time.Duration
	}{
		{GRPCTimeout{}, "", 0},                                          // neither: none
		{GRPCTimeout{}, "2S", 2 * time.Second},                          // the header, uncapped
		{GRPCTimeout{Max: time.Second}, "", time.Second},                // the cap alone
		{GRPCTimeout{Max: time.Second}, "2S", time.Second},              // capped
		{GRPCTimeout{Max: time.Second}, "300m", 300 * time.Millisecond}, // under the cap
		{GRPCTimeout{Max: time.Second}, "junk", time.Second},            // malformed counts as absent
		{GRPCTimeout{Offset: 100 * time.Millisecond}, "300m", 200 * time.Millisecond},
		{GRPCTimeout{Offset: time.Second}, "300m", 300 * time.Millisecond}, // an offset never makes it 0
	} {
		if got := tt.g.Final(tt.header); got != tt.want {
			t.Errorf("%+v.Final(%q) = %v, want %v", tt.g, tt.header, got, tt.want)
		}
	}
}
