//go:build !linux

package main

import "errors"

// joinProxyGroup fails: REDIRECT mode needs Linux (iptables, network
// namespaces, SO_ORIGINAL_DST).
func joinProxyGroup() error {
	return errors.New("interception mode redirect needs Linux")
}
