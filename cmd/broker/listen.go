package main

import (
	"fmt"
	"net"

	"github.com/dpop-broker/dpop-broker/config"
)

// The listen address of `serve`: the config's listen, unless --listen or $BROKER_LISTEN
// overrides it. The code default stays loopback (127.0.0.1:8080) so that a broker started
// on a workstation is not reachable from the network by accident; the container image sets
// BROKER_LISTEN=0.0.0.0:8080, because a container's loopback is unreachable from outside
// (docker run -p 8080:8080 forwards to the container's own interface).

// listenEnv overrides the configured listen address (serve) and names the address to probe
// (healthcheck).
const listenEnv = "BROKER_LISTEN"

// serveListen returns the address serve listens on: override (--listen or $BROKER_LISTEN)
// when set, else the configured one.
func serveListen(configured, override string) (string, error) {
	if override == "" {
		return configured, nil
	}
	if err := config.CheckListenAddr(override); err != nil {
		return "", fmt.Errorf("--listen/%s: %w", listenEnv, err)
	}
	return override, nil
}

// probeBase returns the http:// base URL that reaches a broker listening on addr from the
// same host: an unspecified host (every interface) is reached on loopback.
func probeBase(addr string) (string, error) {
	if err := config.CheckListenAddr(addr); err != nil {
		return "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	switch ip := net.ParseIP(host); {
	case host == "" || ip != nil && ip.Equal(net.IPv4zero):
		host = "127.0.0.1"
	case ip != nil && ip.Equal(net.IPv6unspecified):
		host = "::1"
	}
	if port == "0" {
		return "", fmt.Errorf("%q has port 0 (a free port chosen at start); pass the actual address with --url", addr)
	}
	return "http://" + net.JoinHostPort(host, port), nil
}
