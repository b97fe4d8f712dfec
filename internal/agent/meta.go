package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// meta is what DATA/sandboxes/<id>/sandbox.json records so a restarted
// agent can clean up after (or re-adopt) a sandbox. Secrets (access token,
// env vars) are not written: a resume brings the token again and the env
// lives in the guest's memory.
type meta struct {
	Spec      Spec      `json:"spec"`
	State     sbx.State `json:"state"`
	VMMPID    int       `json:"vmm_pid,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// Error is why a sandbox is in error; a sandbox recorded in error is
	// re-adopted as such at start-up (its disk kept until destroyed).
	Error string `json:"error,omitempty"`
	// VM is the config the sandbox's VMM was (or is being) started with,
	// recorded before the VMM starts so a restarted agent can adopt it.
	VM *vmm.Config `json:"vm,omitempty"`
	// PauseFrom is, while pausing, the sequence number of the snapshot the
	// pause started from (nil: none): a higher committed one means the
	// pause got through.
	PauseFrom *uint64 `json:"pause_from,omitempty"`
	// ResumeAtStart: paused by the agent's shutdown, not by its user; the
	// next agent resumes it at start-up.
	ResumeAtStart bool `json:"resume_at_start,omitempty"`
}

const metaFile = "sandbox.json"

// saveMeta writes the sandbox's meta atomically (temp file + rename). A
// failure is logged, not returned: the file only helps crash recovery and
// must not fail the operation that changed the state.
func (m *Manager) saveMeta(sb *sandbox) {
	sb.mu.Lock()
	md := meta{Spec: sb.spec, State: sb.state, StartedAt: sb.startedAt, Error: sb.errMsg, PauseFrom: sb.pauseFrom, ResumeAtStart: sb.resumeAtStart}
	if sb.machine != nil {
		md.VMMPID = sb.machine.PID()
	}
	if sb.cfg.RunDir != "" {
		cfg := sb.cfg
		md.VM = &cfg
	}
	sb.mu.Unlock()
	md.Spec.AccessToken, md.Spec.Env = "", nil
	b, err := json.MarshalIndent(md, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(sb.runDir, metaFile), b)
	}
	if err != nil {
		sb.log.Warn("save sandbox meta", "err", err)
	}
}

func readMeta(dir string) (meta, error) {
	var md meta
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return md, err
	}
	if err := json.Unmarshal(b, &md); err != nil {
		return md, fmt.Errorf("%s: %w", filepath.Join(dir, metaFile), err)
	}
	return md, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// killStale kills the VMM process of a crashed agent's sandbox. The PID is
// only trusted when the process's command line mentions the sandbox's run
// dir: PIDs are reused, and killing an unrelated process would be worse
// than leaking a VM.
func killStale(pid int, runDir string) {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	// With the trailing slash: sandbox "ab" must not match ".../abc/vm/...".
	if err != nil || !bytes.Contains(cmdline, []byte(runDir+"/")) {
		return
	}
	// VMMs run in their own process group (vmmproc): kill helpers too.
	_ = syscall.Kill(-pid, syscall.SIGKILL) // best effort: it may just have exited
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPIDFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0
	}
	return pid
}
