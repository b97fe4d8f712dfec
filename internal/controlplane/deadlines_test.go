package controlplane

import (
	"net/http/httptest"
	"testing"
)

func TestStreamingPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/v1/sandboxes/x/exec": true, "/v1/sandboxes/x/files": true, "/ws/sandboxes/x/terminal": true,
		"/ui/sandboxes/x/dir": true, "/v1/sandboxes": false, "/sandboxes/x/network": false, "/app/": false,
		"/v1/templates/web/builds/b1/logs?follow=true": true, "/v1/templates/web/builds/b1/logs": false,
		"/templates/t/builds/b/logs?logsOffset=3": false,
	} {
		r := httptest.NewRequest("GET", path, nil)
		if got := streamingPath(r); got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	r := httptest.NewRequest("GET", "/anything", nil)
	r.Header.Set("Upgrade", "websocket")
	if !streamingPath(r) {
		t.Error("WebSocket upgrade not treated as a stream")
	}
}
