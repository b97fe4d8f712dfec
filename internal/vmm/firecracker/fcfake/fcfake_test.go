package fcfake

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestSpecValidatorRejects proves the validator is not a rubber stamp.
func TestSpecValidatorRejects(t *testing.T) {
	t.Parallel()
	spec, err := SpecPath()
	if err != nil {
		t.Skipf("needs the Firecracker API spec at ../shared/specs/firecracker/firecracker.yaml: %v", err)
	}
	router, err := LoadRouter(spec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		ok                       bool
	}{
		{"valid machine config", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512}`, true},
		{"missing required field", "PUT", "/machine-config", `{"vcpu_count":2}`, false},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"two","mem_size_mib":512}`, false},
		{"bad enum", "PATCH", "/vm", `{"state":"Frozen"}`, false},
		{"bad memory backend", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"Disk","backend_path":"/m"}}`, false},
		{"uffd load", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"Uffd","backend_path":"/u.sock"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}]}`, true},
		{"bad snapshot type", "PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m","snapshot_type":"Incremental"}`, false},
		{"unknown path", "PUT", "/no-such-thing", `{}`, false},
		{"valid action", "PUT", "/actions", `{"action_type":"InstanceStart"}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequestWithContext(context.Background(), tc.method, "http://localhost"+tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/json")
			err := Validate(router, r, []byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
