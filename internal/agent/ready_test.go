package agent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestParseReadyCmd(t *testing.T) {
	tests := []struct {
		cmd  string
		want readyProbe
		ok   bool
	}{
		// What the e2b SDK 2.x sends for waitForPort(8000), waitForURL(...).
		{`[ -n "$(ss -Htuln sport = :8000)" ]`, readyProbe{port: 8000}, true},
		{`curl -s -o /dev/null -w "%{http_code}" http://localhost:3000/health | grep -q "200"`, readyProbe{url: "http://localhost:3000/health", status: 200}, true},
		{`curl -s -o /dev/null -w "%{http_code}" 'http://localhost:3000/a?b=c&d='"'"'e' | grep -q "204"`, readyProbe{url: "http://localhost:3000/a?b=c&d='e", status: 204}, true},
		{`[ -n "$(ss -Htuln sport = :8000)" ] && rm -rf /`, readyProbe{}, false},
		{`[ -n "$(ss -Htuln sport = :99999)" ]`, readyProbe{}, false},
		{`pgrep node > /dev/null`, readyProbe{}, false},
		{`wget -q -O /dev/null http://127.0.0.1:8000/`, readyProbe{}, false},
	}
	for _, tc := range tests {
		got, ok := parseReadyCmd(tc.cmd)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseReadyCmd(%q) = %+v, %v; want %+v, %v", tc.cmd, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSocketIn(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0BB8 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
`
	tests := []struct {
		port, state string
		want        bool
	}{
		{":1F40", "0A", true},  // 8000 listening
		{":0BB8", "0A", false}, // 3000 only as an established connection
		{":0050", "0A", false},
	}
	for _, tc := range tests {
		if got := socketIn(strings.NewReader(tcp), tc.port, tc.state); got != tc.want {
			t.Errorf("socketIn(%s, %s) = %v", tc.port, tc.state, got)
		}
	}
}

// urlAnswers asks the guest only: a URL of another host is not fetched
// from the host's network.
func TestURLAnswersGuestOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	tests := []struct {
		url  string
		want bool
	}{
		{"http://localhost:" + port + "/health", true}, // the "guest" is host here
		{"http://127.0.0.1:" + port + "/", true},
		{"http://" + host + ".nip.io:" + port + "/", false},
		{"http://169.254.169.254:" + port + "/", false},
		{"ftp://localhost:" + port + "/", false},
	}
	for _, tc := range tests {
		if got := urlAnswers(context.Background(), host, tc.url, 200); got != tc.want {
			t.Errorf("urlAnswers(%s) = %v, want %v", tc.url, got, tc.want)
		}
	}
	if urlAnswers(context.Background(), host, "http://localhost:"+port+"/", 204) {
		t.Error("status 200 taken for 204")
	}
}

func TestPasswdHas(t *testing.T) {
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1500:1500::/srv:/bin/sh\n")
	for user, want := range map[string]bool{"root": true, "app": true, "1500": true, "0": true, "nobody": false, "4242": false, "x": false} {
		if got := passwdHas(passwd, user); got != want {
			t.Errorf("passwdHas(%q) = %v", user, got)
		}
	}
}
