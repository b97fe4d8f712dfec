package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// readyProbe is a ready check the agent makes itself, so it works in
// images without the tools the E2B SDK's command needs: waitForPort's
// `ss` (the guest's /proc/net tables, read through envd) and waitForURL's
// `curl` (an HTTP request from the host to the guest's address).
type readyProbe struct {
	port   int    // waitForPort
	url    string // waitForURL
	status int
}

var (
	// The commands the e2b SDK (2.x) sends for waitForPort(port) and
	// waitForURL(url, status).
	waitForPortRE = regexp.MustCompile(`^\[ -n "\$\(ss -Htuln sport = :(\d{1,5})\)" \]$`)
	waitForURLRE  = regexp.MustCompile(`^curl -s -o /dev/null -w "%\{http_code\}" ('(?:[^']|'"'"')*'|[\w@%+=:,./-]+) \| grep -q "(\d{3})"$`)
)

// parseReadyCmd recognises the SDK's waitForPort and waitForURL commands.
func parseReadyCmd(cmd string) (readyProbe, bool) {
	if m := waitForPortRE.FindStringSubmatch(cmd); m != nil {
		p, err := strconv.Atoi(m[1])
		return readyProbe{port: p}, err == nil && p > 0 && p < 65536
	}
	if m := waitForURLRE.FindStringSubmatch(cmd); m != nil {
		u := m[1]
		if strings.HasPrefix(u, "'") {
			u = strings.ReplaceAll(strings.Trim(u, "'"), `'"'"'`, "'")
		}
		st, _ := strconv.Atoi(m[2])
		return readyProbe{url: u, status: st}, true
	}
	return readyProbe{}, false
}

// listening reports whether a socket listens on port in the guest: a TCP
// socket in LISTEN or an unconnected UDP socket (what `ss -tuln` lists),
// IPv4 or IPv6.
func listening(ctx context.Context, e Envd, port int) (bool, error) {
	want := fmt.Sprintf(":%04X", port)
	for _, t := range []struct{ file, state string }{
		{"/proc/net/tcp", "0A"}, {"/proc/net/tcp6", "0A"}, {"/proc/net/udp", "07"}, {"/proc/net/udp6", "07"},
	} {
		rc, err := e.ReadFile(ctx, t.file, "root")
		if err != nil {
			return false, err
		}
		found := socketIn(rc, want, t.state)
		rc.Close()
		if found {
			return true, nil
		}
	}
	return false, nil
}

// socketIn scans a /proc/net/{tcp,udp}[6] table for a socket whose local
// address ends in port (":1F40") in state.
func socketIn(r io.Reader, port, state string) bool {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 3 && strings.HasSuffix(f[1], port) && f[3] == state {
			return true
		}
	}
	return false
}

// urlAnswers requests u from the host, its loopback host replaced by the
// guest's address, and compares the status. Only URLs of the guest itself
// (localhost, loopback addresses): the agent must not fetch other
// addresses from the host's network for a template. A server bound to the
// guest's loopback only is not reached this way: the SDK's command (run
// as well) covers it when the image has curl.
func urlAnswers(ctx context.Context, guestHost, u string, status int) bool {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") {
		return false
	}
	switch pu.Hostname() {
	case "localhost", "127.0.0.1", "0.0.0.0", "::1":
	default:
		return false
	}
	port := pu.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[pu.Scheme]
	}
	pu.Host = net.JoinHostPort(guestHost, port)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pu.String(), nil)
	if err != nil {
		return false
	}
	// No redirects followed: curl without -L reports the first status.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == status
}

// probe runs p against sandbox id's guest.
func (m *Manager) probe(ctx context.Context, id string, e Envd, p readyProbe) bool {
	if p.port > 0 {
		ok, err := listening(ctx, e, p.port)
		return err == nil && ok
	}
	sb, err := m.get(id)
	if err != nil {
		return false
	}
	sb.mu.Lock()
	slot := sb.slot
	sb.mu.Unlock()
	if slot == nil {
		return false
	}
	host, _ := guestAddrs(slot.Address)
	return urlAnswers(ctx, host, p.url, p.status)
}
