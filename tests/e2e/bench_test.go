//go:build vm

package e2e

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
)

// BenchmarkSnapshotLifecycle measures, in one run on one host: a cold boot,
// pause seconds per GiB of guest memory in use (full and diff pauses),
// resume latency, and create-from-template against the cold boot. All
// through the REST API, so each figure includes the control plane and the
// envd handshake. Run:
//
//	HEARTH_IMAGES_DIR=/var/tmp/hearth-dev go test -tags vm -run '^$' \
//	  -bench SnapshotLifecycle -benchtime 1x ./tests/e2e
func BenchmarkSnapshotLifecycle(b *testing.B) {
	const inUseMiB = 256
	for i := 0; i < b.N; i++ {
		a := newAPI(b)
		t0 := time.Now()
		sb := a.create(map[string]any{"template": "base", "memory_mb": 1024})
		cold := time.Since(t0)
		// Fill guest memory with incompressible data held by a process.
		// (A repeated random MiB: non-zero blocks, filled at memcpy speed
		// even in a TCG guest; the store does not deduplicate.)
		a.exec(sb.ID, "sh", "-c", `setsid nohup python3 -c "$0" >/dev/null 2>&1 &`,
			"import os,time\nx=os.urandom(1<<20)*"+strconv.Itoa(inUseMiB)+"\nopen('/tmp/filled','w').close()\ntime.sleep(1e9)")
		for n := 0; a.exec(sb.ID, "test", "-e", "/tmp/filled").ExitCode != 0; n++ {
			if n > 600 {
				b.Fatal("guest never filled its memory")
			}
			time.Sleep(100 * time.Millisecond)
		}
		snapDir := filepath.Join(stack.DataDir, "sandboxes", sb.ID, "snapshot")

		t1 := time.Now()
		a.pause(sb.ID)
		pauseFull := time.Since(t1)
		full, err := sandboxsnap.Stat(snapDir)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		a.resume(sb.ID)
		resume := time.Since(t2)
		a.exec(sb.ID, "sh", "-c", "head -c 16000000 /dev/urandom > /dev/shm/x 2>/dev/null || head -c 16000000 /dev/urandom > /tmp/x")
		t3 := time.Now()
		a.pause(sb.ID)
		pauseDiff := time.Since(t3)
		diff, err := sandboxsnap.Stat(snapDir)
		if err != nil {
			b.Fatal(err)
		}
		a.resume(sb.ID)

		name := "bench-" + sb.ID
		var tpl template
		t4 := time.Now()
		if code := a.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": sb.ID, "name": name}, &tpl); code != http.StatusCreated {
			b.Fatalf("snapshot: %d", code)
		}
		snapTpl := time.Since(t4)
		// The first spawn also imports the template's disk into the root-disk
		// backend (once per template); later spawns only clone it.
		var spawns []time.Duration
		for range 3 {
			t5 := time.Now()
			kid := a.create(map[string]any{"template": name})
			spawns = append(spawns, time.Since(t5))
			a.do("DELETE", "/v1/sandboxes/"+kid.ID, nil, nil)
		}
		spawn := min(spawns[1], spawns[2])
		a.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil)
		a.do("DELETE", "/v1/snapshots/"+name, nil, nil)

		gib := float64(full.StoredBytes) / (1 << 30)
		b.ReportMetric(cold.Seconds(), "coldboot-s")
		b.ReportMetric(pauseFull.Seconds(), "pause-full-s")
		b.ReportMetric(pauseFull.Seconds()/gib, "pause-full-s/GiB")
		b.ReportMetric(float64(full.StoredBytes)/(1<<20), "in-use-MiB")
		b.ReportMetric(pauseDiff.Seconds(), "pause-diff-s")
		b.ReportMetric(float64(diff.StoredBytes-full.StoredBytes)/(1<<20), "diff-stored-MiB")
		b.ReportMetric(resume.Seconds()*1000, "resume-ms")
		b.ReportMetric(snapTpl.Seconds(), "snapshot-template-s")
		b.ReportMetric(spawns[0].Seconds()*1000, "spawn-first-ms")
		b.ReportMetric(spawn.Seconds()*1000, "spawn-ms")
		b.ReportMetric(cold.Seconds()/spawn.Seconds(), "coldboot/spawn")
	}
}
