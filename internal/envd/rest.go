package envd

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set(VersionHeader, Version)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// initRequest is the /init body. Fields envd does not use (hyperloopIP,
// lifecycleID, volumeMounts, caBundle) are accepted and ignored.
type initRequest struct {
	EnvVars        map[string]string `json:"envVars"`
	AccessToken    *string           `json:"accessToken"`
	Timestamp      *time.Time        `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser"`
	DefaultWorkdir string            `json:"defaultWorkdir"`
}

// clockSkewLimit is how far the guest clock may drift before /init resets
// it; after a snapshot restore the guest clock is behind by the pause time.
const clockSkewLimit = 50 * time.Millisecond

func (s *Server) handleInit(w http.ResponseWriter, r *http.Request) {
	var req initRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "decoding body: "+err.Error())
			return
		}
	}
	if req.Timestamp != nil {
		if skew := s.now().Sub(*req.Timestamp).Abs(); skew > clockSkewLimit {
			if err := s.setClock(*req.Timestamp); err != nil {
				// Not fatal: a dev host without CAP_SYS_TIME still works.
				s.log.Warn("setting clock from /init failed", "err", err, "skew", skew)
			} else {
				s.log.Info("clock set from /init", "skew", skew)
			}
		}
	}
	s.state.MergeEnv(req.EnvVars)
	s.state.SetDefaults(req.DefaultUser, req.DefaultWorkdir)
	if req.AccessToken != nil && *req.AccessToken != "" {
		s.tokenMu.Lock()
		s.token = *req.AccessToken
		s.initHash = nil // the boot secret is spent
		s.tokenMu.Unlock()
	}
	s.log.Info("initialised", "env_vars", len(req.EnvVars), "default_user", req.DefaultUser, "default_workdir", req.DefaultWorkdir)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleEnvs(w http.ResponseWriter, _ *http.Request) {
	env := s.state.Env()
	if env == nil {
		env = map[string]string{}
	}
	writeJSON(w, http.StatusOK, env)
}

// checkSignature verifies an E2B signed /files URL: signature is
// "v1_" + base64(sha256("path:operation:user:token[:expiration]")) without
// padding, operation is "read" for GET and "write" for POST.
func (s *Server) checkSignature(r *http.Request, token string) error {
	q := r.URL.Query()
	op := "read"
	if r.Method == http.MethodPost {
		op = "write"
	}
	raw := q.Get("path") + ":" + op + ":" + q.Get("username") + ":" + token
	if exp := q.Get("signature_expiration"); exp != "" {
		secs, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			return errors.New("invalid signature_expiration")
		}
		if s.now().Unix() > secs {
			return errors.New("signature expired")
		}
		raw += ":" + exp
	}
	sum := sha256.Sum256([]byte(raw))
	want := "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	if !tokenEqual(q.Get("signature"), want) {
		return errors.New("invalid signature")
	}
	return nil
}

// metrics is the /metrics body (field names from the envd spec).
type metrics struct {
	TS          int64   `json:"ts"`
	CPUCount    int     `json:"cpu_count"`
	CPUUsedPct  float32 `json:"cpu_used_pct"`
	MemTotal    uint64  `json:"mem_total"`
	MemUsed     uint64  `json:"mem_used"`
	MemCache    uint64  `json:"mem_cache"`
	MemTotalMiB uint64  `json:"mem_total_mib"`
	MemUsedMiB  uint64  `json:"mem_used_mib"`
	DiskUsed    uint64  `json:"disk_used"`
	DiskTotal   uint64  `json:"disk_total"`
}

// cpuSampler computes CPU use between successive /metrics calls (no sleep
// inside the request); the first call reports use since boot.
type cpuSampler struct {
	mu          sync.Mutex
	busy, total uint64
}

func (c *cpuSampler) sample() float32 {
	busy, total, err := readCPU()
	if err != nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	db, dt := busy-c.busy, total-c.total
	c.busy, c.total = busy, total
	if dt == 0 {
		return 0
	}
	return float32(db) / float32(dt) * 100
}

func readCPU() (busy, total uint64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, errors.New("empty /proc/stat")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, errors.New("unexpected /proc/stat")
	}
	for i, v := range fields[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

func readMeminfo() (map[string]uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(fields[0], 10, 64)
		out[k] = n * 1024 // values are in kB
	}
	return out, sc.Err()
}

func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	m := metrics{TS: s.now().Unix(), CPUCount: runtime.NumCPU(), CPUUsedPct: s.metrics.sample()}
	if mi, err := readMeminfo(); err == nil {
		m.MemTotal = mi["MemTotal"]
		m.MemCache = mi["Cached"]
		m.MemUsed = mi["MemTotal"] - mi["MemAvailable"]
		m.MemTotalMiB = m.MemTotal >> 20
		m.MemUsedMiB = m.MemUsed >> 20
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err == nil {
		m.DiskTotal = st.Blocks * uint64(st.Bsize)
		m.DiskUsed = (st.Blocks - st.Bfree) * uint64(st.Bsize)
	}
	writeJSON(w, http.StatusOK, m)
}
