package istiostats

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loom-mesh/loom/internal/testutil"
)

func testNode(t *testing.T, id, workload, app string) *corev3.Node {
	t.Helper()
	md, err := structpb.NewStruct(map[string]any{
		"WORKLOAD_NAME": workload, "NAMESPACE": "default", "CLUSTER_ID": "Kubernetes",
		"LABELS":        map[string]any{"app": app, "version": "v1"},
		"ISTIO_VERSION": "not exchanged",
	})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: id, Metadata: md}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// The frame is Istio's: magic, length, then an Any of a Struct with the
// metadata and the node ID, decoded here by the protobuf library alone.
func TestMXFrameWireFormat(t *testing.T) {
	x := NewExchange(testNode(t, "sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local", "productpage-v1", "productpage"))
	f := x.frame
	if len(f) < mxHeaderLen {
		t.Fatalf("frame %d bytes", len(f))
	}
	if m := binary.BigEndian.Uint32(f); m != 0x3D230467 {
		t.Fatalf("magic %#x", m)
	}
	if n := binary.BigEndian.Uint32(f[4:]); int(n) != len(f)-mxHeaderLen {
		t.Fatalf("length %d, payload %d", n, len(f)-mxHeaderLen)
	}
	var a anypb.Any
	if err := proto.Unmarshal(f[mxHeaderLen:], &a); err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != "type.googleapis.com/google.protobuf.Struct" {
		t.Fatalf("type URL %q", a.GetTypeUrl())
	}
	var s structpb.Struct
	if err := a.UnmarshalTo(&s); err != nil {
		t.Fatal(err)
	}
	md := s.GetFields()["x-envoy-peer-metadata"].GetStructValue().GetFields()
	if md["WORKLOAD_NAME"].GetStringValue() != "productpage-v1" || md["LABELS"].GetStructValue().GetFields()["app"].GetStringValue() != "productpage" {
		t.Fatalf("metadata %v", md)
	}
	if _, ok := md["ISTIO_VERSION"]; ok {
		t.Fatal("a key outside the exchanged set was sent")
	}
	if id := s.GetFields()["x-envoy-peer-metadata-id"].GetStringValue(); id != "sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local" {
		t.Fatalf("id %q", id)
	}
}

// Both ends exchange frames whoever speaks first, and the stream arrives
// intact both ways.
func TestMXConnExchange(t *testing.T) {
	for _, serverFirst := range []bool{false, true} {
		name := "client-first"
		if serverFirst {
			name = "server-first"
		}
		t.Run(name, func(t *testing.T) {
			c, s := testutil.TCPPair(t)
			mc := NewExchange(testNode(t, "c", "productpage-v1", "productpage")).Conn(c)
			ms := NewExchange(testNode(t, "s", "reviews-v2", "reviews")).Conn(s)
			if _, done := ms.Peer(); done {
				t.Fatal("done before any read")
			}
			first, second := mc, ms
			if serverFirst {
				first, second = ms, mc
			}
			if _, err := first.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, second, 5); got != "hello" {
				t.Fatalf("read %q", got)
			}
			if _, err := second.Write([]byte("world!")); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, first, 6); got != "world!" {
				t.Fatalf("read %q", got)
			}
			for _, tc := range []struct {
				c    *MXConn
				want string
			}{{ms, "productpage-v1"}, {mc, "reviews-v2"}} {
				p, done := tc.c.Peer()
				if !done || p == nil || p.Workload != tc.want || p.Namespace != "default" || p.Cluster != "Kubernetes" {
					t.Fatalf("peer %+v done %v, want workload %s", p, done, tc.want)
				}
			}
		})
	}
}

// A peer that sends no frame (no metadata exchange filter) is read as is;
// so is a frame whose payload is no Struct, less its header, as Envoy's
// filter does.
func TestMXConnWithoutFrame(t *testing.T) {
	bad := []byte{0x3D, 0x23, 0x04, 0x67, 0, 0, 0, 4, 'j', 'u', 'n', 'k'}
	hugeLen := []byte{0x3D, 0x23, 0x04, 0x67, 0xff, 0xff, 0xff, 0xff}
	for _, tc := range []struct {
		name      string
		sent      []byte
		closeSend bool
		want      string
		wantEOF   bool
	}{
		{name: "plain stream", sent: []byte("GET / HTTP/1.1\r\n\r\n"), want: "GET / HTTP/1.1\r\n\r\n"},
		{name: "short stream then FIN", sent: []byte("abc"), closeSend: true, want: "abc", wantEOF: true},
		{name: "nothing then FIN", closeSend: true, wantEOF: true},
		{name: "malformed payload", sent: bad, want: "junk"},
		{name: "implausible length", sent: append(hugeLen, 'x'), want: string(hugeLen) + "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := testutil.TCPPair(t)
			ms := NewExchange(testNode(t, "s", "reviews-v2", "reviews")).Conn(s)
			if len(tc.sent) > 0 {
				if _, err := c.Write(tc.sent); err != nil {
					t.Fatal(err)
				}
			}
			if tc.closeSend {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			if tc.want != "" {
				if got := readN(t, ms, len(tc.want)); got != tc.want {
					t.Fatalf("read %q, want %q", got, tc.want)
				}
			}
			if tc.wantEOF {
				_ = ms.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := ms.Read(make([]byte, 8)); n != 0 || err != io.EOF {
					t.Fatalf("read %d, %v; want EOF", n, err)
				}
			}
			if p, done := ms.Peer(); !done || p != nil {
				t.Fatalf("peer %+v done %v", p, done)
			}
			// The wrapped end still sent its own frame.
			f := NewExchange(testNode(t, "s", "reviews-v2", "reviews")).frame
			if got := readN(t, c, len(f)); got != string(f) {
				t.Fatal("the frame sent differs")
			}
		})
	}
}

// A read deadline that cuts the frame in two does not lose it: the next
// Read goes on.
func TestMXConnFrameAcrossDeadline(t *testing.T) {
	c, s := testutil.TCPPair(t)
	ms := NewExchange(nil).Conn(s)
	f := NewExchange(testNode(t, "c", "productpage-v1", "productpage")).frame
	if _, err := c.Write(f[:5]); err != nil {
		t.Fatal(err)
	}
	_ = ms.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := ms.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	if _, done := ms.Peer(); done {
		t.Fatal("done with half a frame")
	}
	if _, err := c.Write(append(f[5:], "data"...)); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, ms, 4); got != "data" {
		t.Fatalf("read %q", got)
	}
	if p, done := ms.Peer(); !done || p == nil || p.Workload != "productpage-v1" {
		t.Fatalf("peer %+v done %v", p, done)
	}
}
