//go:build vm

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// TestEgressPolicy drives a real guest's outbound connections against
// listeners this test made: on a private address the operator opened
// (--egress-allow-private), on a private address that stays closed, and on
// an address of the host itself. Sandbox policies are set at create and
// replaced on the running sandbox (PUT /v1/sandboxes/{id}/network).
func TestEgressPolicy(t *testing.T) {
	if egressNet == nil {
		t.Skip("no test network (needs root and ip(8))")
	}
	opened, closed := egressNet.Nodes[0], egressNet.Nodes[1]
	dst := map[string]netip.AddrPort{
		"opened": netip.AddrPortFrom(opened.Addr, 8080),
		"closed": netip.AddrPortFrom(closed.Addr, 8080),
		"host":   netip.AddrPortFrom(egressNet.Gateway, 18090),
	}
	serveBanner(t, opened.Listen, 8080, "opened")
	serveBanner(t, closed.Listen, 8080, "closed")
	serveBanner(t, func(port int) (net.Listener, error) {
		return net.Listen("tcp", dst["host"].String())
	}, 18090, "host")

	a := newAPI(t)
	// Created with a policy: no internet, but the opened address allowed.
	sb := a.create(map[string]any{"template": "base", "allow_internet": false, "allow_out": []string{opened.Addr.String()}})
	logConsoleOnFailure(t, sb.ID)
	probe := func(t *testing.T, want ...string) {
		t.Helper()
		for _, name := range []string{"opened", "closed", "host"} {
			got := guestConnect(a, sb.ID, dst[name])
			reach := len(want) > 0 && strings.Contains(strings.Join(want, ","), name)
			if reach && got != name {
				t.Errorf("%s (%s): got %q, want the listener's banner", name, dst[name], got)
			}
			if !reach && got != "" {
				t.Errorf("%s (%s) reached (%q); want it blocked", name, dst[name], got)
			}
		}
	}
	t.Run("created with allowInternet false and allowOut", func(t *testing.T) { probe(t, "opened") })

	set := func(t *testing.T, body map[string]any) {
		t.Helper()
		var out map[string]any
		if code := a.do("PUT", "/v1/sandboxes/"+sb.ID+"/network", body, &out); code != http.StatusOK {
			t.Fatalf("set network %v: %d %v", body, code, out)
		}
	}
	for _, c := range []struct {
		name string
		body map[string]any
		want []string
	}{
		{"default", map[string]any{}, []string{"opened"}},
		{"denyOut", map[string]any{"deny_out": []string{opened.Addr.String() + "/32"}}, nil},
		{"allowOut over denyOut 0.0.0.0/0", map[string]any{"allow_out": []string{opened.Addr.String()}, "deny_out": []string{"0.0.0.0/0"}}, []string{"opened"}},
		{"allowOut of a closed range", map[string]any{"allow_out": []string{closed.Addr.String(), egressNet.Subnet.String()}}, []string{"opened"}},
		{"allowInternet false", map[string]any{"allow_internet": false}, nil},
	} {
		t.Run("update to "+c.name, func(t *testing.T) {
			set(t, c.body)
			probe(t, c.want...)
		})
	}

	t.Run("malformed rules", func(t *testing.T) {
		for _, rule := range []string{"10.0.0.1/8", "example.com", "1.2.3.4/40"} {
			var e struct{ Message string }
			if code := a.do("PUT", "/v1/sandboxes/"+sb.ID+"/network", map[string]any{"deny_out": []string{rule}}, &e); code != http.StatusBadRequest || !strings.Contains(e.Message, fmt.Sprintf("%q", rule)) {
				t.Errorf("deny_out %q: %d %q, want 400 naming the rule", rule, code, e.Message)
			}
		}
	})
}

// serveBanner answers every connection on port with banner.
func serveBanner(t *testing.T, listen func(int) (net.Listener, error), port int, banner string) {
	t.Helper()
	ln, err := listen(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, banner)
			c.Close()
		}
	}()
}

// guestConnect connects from inside the guest and returns the first line
// the server sent, or "" when the connection failed (a dropped SYN: the
// 3 s bound is how long "unreachable" is waited for).
func guestConnect(a *api, id string, to netip.AddrPort) string {
	a.t.Helper()
	r := a.exec(id, "python3", "-c", `import socket,sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print(s.makefile().readline().strip())
except OSError:
    pass`, to.Addr().String(), fmt.Sprint(to.Port()))
	return strings.TrimSpace(r.Stdout)
}
