package forwarded_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/forwarded"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name       string
		trusted    []string
		peer       string
		xff, proto string
		wantAddr   string
		wantProto  string // forwarded.Scheme as the handler sees it
	}{
		{"no proxy trusted: headers dropped", nil, "203.0.113.9:5000", "127.0.0.1", "https", "203.0.113.9:5000", "http"},
		{"untrusted peer cannot claim loopback", []string{"10.0.0.0/8"}, "203.0.113.9:5000", "127.0.0.1", "https", "203.0.113.9:5000", "http"},
		{"trusted proxy names the client", []string{"127.0.0.1"}, "127.0.0.1:4000", "198.51.100.7", "https", "198.51.100.7:0", "https"},
		{"right-most untrusted hop wins", []string{"127.0.0.0/8", "10.0.0.0/8"}, "127.0.0.1:4000", "1.2.3.4, 198.51.100.7, 10.1.1.1", "http", "198.51.100.7:0", "http"},
		{"forged left part ignored", []string{"127.0.0.1/32"}, "127.0.0.1:4000", "127.0.0.1, 198.51.100.7", "", "198.51.100.7:0", "http"},
		{"odd proto dropped", []string{"127.0.0.1"}, "127.0.0.1:4000", "198.51.100.7", "gopher", "198.51.100.7:0", "http"},
		{"trusted peer without header", []string{"::1"}, "[::1]:4000", "", "", "::1:0", "http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := forwarded.Parse(tt.trusted)
			if err != nil {
				t.Fatal(err)
			}
			var gotAddr, gotProto, gotXFF string
			h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotAddr, gotProto, gotXFF = r.RemoteAddr, forwarded.Scheme(r), r.Header.Get("X-Forwarded-For")
			}))
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tt.peer
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			if tt.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			if tt.wantAddr == "::1:0" {
				tt.wantAddr = "[::1]:0"
			}
			if gotAddr != tt.wantAddr || gotProto != tt.wantProto || gotXFF != "" {
				t.Fatalf("RemoteAddr %q scheme %q XFF %q; want %q %q and no XFF", gotAddr, gotProto, gotXFF, tt.wantAddr, tt.wantProto)
			}
		})
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	if _, err := forwarded.Parse([]string{"10.0.0.0/8", "proxy.local"}); err == nil || !strings.Contains(err.Error(), `--trusted-proxy "proxy.local"`) {
		t.Fatalf("err = %v", err)
	}
}
