package secret

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestStoreSetGetDelete(t *testing.T) {
	s := NewStore()
	if s.Get(RootCA) != nil {
		t.Fatal("empty store returned a secret")
	}
	ch := s.Subscribe()
	s.Set(&Secret{Name: RootCA, Roots: x509.NewCertPool()})
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Set did not notify")
	}
	got := s.Get(RootCA)
	if got == nil || got.Updated.IsZero() {
		t.Fatalf("Get(%q) = %+v, want a stored secret with Updated set", RootCA, got)
	}
	first := got
	s.Set(&Secret{Name: RootCA, Roots: x509.NewCertPool()})
	if s.Get(RootCA) == first {
		t.Fatal("Set did not replace the secret")
	}
	if first.Roots == nil {
		t.Fatal("a replaced secret was mutated")
	}
	<-ch
	s.Delete(RootCA)
	if s.Get(RootCA) != nil {
		t.Fatal("Delete left the secret")
	}
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Delete did not notify")
	}
	s.Delete(RootCA) // absent: no change, no notification
	select {
	case <-ch:
		t.Fatal("deleting an absent secret notified")
	default:
	}
}

func TestNotAfterOfTrustBundleIsZero(t *testing.T) {
	if !(&Secret{Name: RootCA}).NotAfter().IsZero() {
		t.Fatal("a trust bundle has no expiry")
	}
	var nilSecret *Secret
	if !nilSecret.NotAfter().IsZero() {
		t.Fatal("nil secret has no expiry")
	}
}
