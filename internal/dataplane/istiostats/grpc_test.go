package istiostats

import (
	"encoding/binary"
	"testing"
)

// frames encodes gRPC length-prefixed messages of the given payload sizes.
func frames(sizes ...int) []byte {
	var b []byte
	for i, n := range sizes {
		var p [5]byte
		p[0] = byte(i % 2) // compressed flag: ignored by the counter
		binary.BigEndian.PutUint32(p[1:], uint32(n))
		b = append(b, p[:]...)
		for j := 0; j < n; j++ {
			b = append(b, byte(j))
		}
	}
	return b
}

func TestFrameCounter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []byte
		want  uint64
		chunk []int // read sizes, repeated; nil: one read
	}{
		{name: "none", in: nil, want: 0},
		{name: "one", in: frames(10), want: 1},
		{name: "empty message", in: frames(0), want: 1},
		{name: "three", in: frames(3, 0, 70000), want: 3},
		{name: "byte at a time", in: frames(3, 0, 300, 1), want: 4, chunk: []int{1}},
		{name: "odd reads", in: frames(7, 1<<16, 2, 0, 5), want: 5, chunk: []int{3, 7, 2, 4096}},
		{name: "prefix split 4+1", in: frames(9, 9), want: 2, chunk: []int{4, 1, 9, 2, 3}},
		{name: "partial prefix not counted", in: frames(4)[:4], want: 0},
		{name: "large length bytes", in: frames(0x01020304)[:5+100], want: 1, chunk: []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c FrameCounter
			p := tc.in
			if tc.chunk == nil {
				c.Feed(p)
			}
			for i := 0; tc.chunk != nil && len(p) > 0; i++ {
				n := min(tc.chunk[i%len(tc.chunk)], len(p))
				c.Feed(p[:n])
				p = p[n:]
			}
			if got := c.Count(); got != tc.want {
				t.Errorf("Count() = %d, want %d", got, tc.want)
			}
		})
	}
}

// Every split of a stream into two reads counts the same.
func TestFrameCounterEverySplit(t *testing.T) {
	in := frames(0, 1, 5, 300, 2)
	for i := 0; i <= len(in); i++ {
		var c FrameCounter
		c.Feed(in[:i])
		c.Feed(in[i:])
		if c.Count() != 5 {
			t.Fatalf("split at %d: Count() = %d, want 5", i, c.Count())
		}
	}
}

func BenchmarkFrameCounter(b *testing.B) {
	in := frames(100, 100, 100, 100, 100, 100, 100, 100, 100, 100)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	var c FrameCounter
	for i := 0; i < b.N; i++ {
		c.Feed(in)
	}
}
