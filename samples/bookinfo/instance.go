package bookinfo

import "math/rand/v2"

// instanceChars are the characters Kubernetes uses for generated name
// suffixes (no vowels, no look-alikes).
const instanceChars = "bcdfghjklmnpqrstvwxz2456789"

// DefaultInstance returns a pod-like instance name "<app>-<version>-<5
// random chars>", e.g. "reviews-v2-7d9f1".
func DefaultInstance(app, version string) string {
	b := make([]byte, 5)
	for i := range b {
		b[i] = instanceChars[rand.IntN(len(instanceChars))]
	}
	return app + "-" + version + "-" + string(b)
}
