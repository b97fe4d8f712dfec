package scheduler_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/scheduler"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func host(id string, vcpus, memMB, usedCPU, usedMem int) scheduler.Candidate {
	return scheduler.Candidate{ID: id, Status: store.HostReady, VCPUs: vcpus, MemoryMB: memMB, DiskMB: 100_000,
		UsedVCPUs: usedCPU, UsedMemoryMB: usedMem}
}

func with(c scheduler.Candidate, f func(*scheduler.Candidate)) scheduler.Candidate { f(&c); return c }

func TestPlace(t *testing.T) {
	t.Parallel()
	small := scheduler.Request{VCPUs: 2, MemoryMB: 1024, DiskMB: 1000}
	cases := []struct {
		name   string
		hosts  []scheduler.Candidate
		req    scheduler.Request
		policy scheduler.Policy
		want   string // host ID; "" when an error is expected
		errHas string
	}{
		{name: "least loaded by memory", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 6000), host("b", 8, 8192, 0, 1000)}, req: small, want: "b"},
		{name: "least loaded by cpu", hosts: []scheduler.Candidate{host("a", 8, 8192, 20, 1000), host("b", 8, 8192, 2, 1000)}, req: small, want: "b"},
		{name: "bigger host is less loaded", hosts: []scheduler.Candidate{host("a", 8, 8192, 4, 4096), host("b", 16, 16384, 4, 4096)}, req: small, want: "b"},
		{name: "tie goes to fewer sandboxes", hosts: []scheduler.Candidate{
			with(host("a", 8, 8192, 2, 1024), func(c *scheduler.Candidate) { c.SandboxCount = 3 }),
			with(host("b", 8, 8192, 2, 1024), func(c *scheduler.Candidate) { c.SandboxCount = 1 })}, req: small, want: "b"},
		{name: "full tie goes to smaller id", hosts: []scheduler.Candidate{host("c", 8, 8192, 0, 0), host("a", 8, 8192, 0, 0), host("b", 8, 8192, 0, 0)}, req: small, want: "a"},
		{name: "cpu overcommit 4x default admits 32 vcpus on 8", hosts: []scheduler.Candidate{host("a", 8, 65536, 30, 0)}, req: small, want: "a"},
		{name: "cpu overcommit exceeded", hosts: []scheduler.Candidate{host("a", 8, 65536, 31, 0)}, req: small, errHas: "lacks vCPUs"},
		{name: "cpu overcommit 1x", hosts: []scheduler.Candidate{host("a", 8, 65536, 7, 0)}, req: small, policy: scheduler.Policy{CPUOvercommit: 1}, errHas: "lacks vCPUs"},
		{name: "memory exactly full fits", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 7168)}, req: small, want: "a"},
		{name: "memory not overcommitted", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 7169)}, req: small, errHas: "lacks memory"},
		{name: "memory overcommit 1.5x", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 10000)}, req: small, policy: scheduler.Policy{MemoryOvercommit: 1.5}, want: "a"},
		{name: "disk full", hosts: []scheduler.Candidate{with(host("a", 8, 8192, 0, 0), func(c *scheduler.Candidate) { c.UsedDiskMB = 99_500 })}, req: small, errHas: "lacks disk"},
		{name: "disk unknown is not checked", hosts: []scheduler.Candidate{with(host("a", 8, 8192, 0, 0), func(c *scheduler.Candidate) { c.DiskMB = 0 })}, req: small, want: "a"},
		{name: "skips unreachable and draining", hosts: []scheduler.Candidate{
			with(host("a", 64, 65536, 0, 0), func(c *scheduler.Candidate) { c.Status = store.HostUnreachable }),
			with(host("b", 64, 65536, 0, 0), func(c *scheduler.Candidate) { c.Status = store.HostDraining }),
			host("c", 8, 8192, 6, 6000)}, req: small, want: "c"},
		{name: "no capacity reported", hosts: []scheduler.Candidate{host("a", 0, 0, 0, 0)}, req: small, errHas: "has not reported capacity"},
		{name: "no hosts", req: small, errHas: "no hosts registered"},
		{name: "all refused, reasons summarized", hosts: []scheduler.Candidate{
			with(host("a", 8, 8192, 0, 0), func(c *scheduler.Candidate) { c.Status = store.HostUnreachable }),
			host("b", 8, 1024, 0, 512), host("c", 8, 1024, 0, 512)}, req: small, errHas: "1 is unreachable, 2 lacks memory"},
		{name: "template host preferred over emptier host", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0), host("b", 8, 8192, 6, 6000)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"b"}}, want: "b"},
		{name: "template host full: copy to best other", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 4000), host("b", 8, 8192, 0, 8000), host("c", 8, 8192, 0, 0)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"b"}}, want: "c"},
		{name: "template host draining: copy", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0), with(host("b", 8, 8192, 0, 0), func(c *scheduler.Candidate) { c.Status = store.HostDraining })},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"b"}}, want: "a"},
		{name: "a copy holder is preferred", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0), host("b", 8, 8192, 0, 8000), host("c", 8, 8192, 4, 4000)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"b", "c"}}, want: "c"},
		{name: "template host unreachable: nothing to copy from", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0), with(host("b", 8, 8192, 0, 0), func(c *scheduler.Candidate) { c.Status = store.HostUnreachable })},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"b"}}, errHas: "1 is unreachable; none can send a copy"},
		{name: "template host full and no other room", hosts: []scheduler.Candidate{host("a", 8, 1024, 0, 1024), host("b", 8, 1024, 0, 1024)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"b"}}, errHas: "no other host has room"},
		{name: "template host unknown", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, TemplateID: "t1", TemplateHosts: []string{"gone"}}, errHas: "are not registered; none can send a copy"},
		{name: "resume on the snapshot's host even if busier", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0), host("b", 8, 8192, 6, 6000)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, RequiredHost: "b"}, want: "b"},
		{name: "resume host full: no copy offered", hosts: []scheduler.Candidate{host("a", 8, 8192, 0, 0), host("b", 8, 8192, 0, 8000)},
			req: scheduler.Request{VCPUs: 1, MemoryMB: 512, RequiredHost: "b"}, errHas: "holding the sandbox's snapshot lacks memory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := scheduler.Place(tc.hosts, tc.req, tc.policy)
			if tc.want != "" {
				if err != nil || d.HostID != tc.want {
					t.Fatalf("got %+v, %v; want host %s", d, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("placed on %s; want an error", d.HostID)
			}
			if tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("error %q lacks %q", err, tc.errHas)
			}
			if !errors.Is(err, scheduler.ErrNoCapacity) {
				t.Fatalf("error %v is not ErrNoCapacity", err)
			}
		})
	}
}

// TestPlaceSpreads: repeated placements with usage fed back spread evenly.
func TestPlaceSpreads(t *testing.T) {
	t.Parallel()
	hosts := []scheduler.Candidate{host("a", 8, 8192, 0, 0), host("b", 8, 8192, 0, 0), host("c", 8, 8192, 0, 0)}
	count := map[string]int{}
	req := scheduler.Request{VCPUs: 1, MemoryMB: 512}
	for range 48 {
		d, err := scheduler.Place(hosts, req, scheduler.Policy{})
		if err != nil {
			t.Fatal(err)
		}
		count[d.HostID]++
		for i := range hosts {
			if hosts[i].ID == d.HostID {
				hosts[i].UsedVCPUs++
				hosts[i].UsedMemoryMB += 512
				hosts[i].SandboxCount++
			}
		}
	}
	if count["a"] != 16 || count["b"] != 16 || count["c"] != 16 {
		t.Fatalf("uneven spread %v", count)
	}
	if _, err := scheduler.Place(hosts, req, scheduler.Policy{}); !errors.Is(err, scheduler.ErrNoCapacity) {
		t.Fatalf("49th sandbox on full hosts: %v", err)
	}
}

func BenchmarkPlace100Hosts(b *testing.B) {
	hosts := make([]scheduler.Candidate, 100)
	for i := range hosts {
		hosts[i] = host(fmt.Sprintf("h%03d", i), 32, 131072, i%40, (i*997)%100000)
		hosts[i].SandboxCount = i % 17
	}
	req := scheduler.Request{VCPUs: 2, MemoryMB: 2048, DiskMB: 1000}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := scheduler.Place(hosts, req, scheduler.Policy{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
