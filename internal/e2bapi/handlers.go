package e2bapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Wire types, written from E2B's OpenAPI contract (specs/e2b/openapi.yml,
// Apache-2.0): NewSandbox, Sandbox, SandboxDetail, ListedSandbox,
// SandboxMetric, Template.

// defaultTimeoutS is E2B's NewSandbox.timeout default. SDKs always send a
// timeout (300 s by default); only hand-written requests get this.
const defaultTimeoutS = 15

type newSandboxJSON struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int              `json:"timeout"`
	AutoPause           *bool             `json:"autoPause"`
	AutoPauseMemory     *bool             `json:"autoPauseMemory"`
	AutoResume          json.RawMessage   `json:"autoResume"` // {"enabled": bool}; older clients: bool
	Secure              *bool             `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	Network             *networkJSON      `json:"network"`
	Mcp                 json.RawMessage   `json:"mcp"`
	Iam                 json.RawMessage   `json:"iam"`
	VolumeMounts        []json.RawMessage `json:"volumeMounts"`
}

// sandboxJSON is E2B's Sandbox: the answer to create, connect and resume.
type sandboxJSON struct {
	TemplateID      string  `json:"templateID"`
	SandboxID       string  `json:"sandboxID"`
	Alias           string  `json:"alias,omitempty"`
	ClientID        string  `json:"clientID"`
	EnvdVersion     string  `json:"envdVersion"`
	EnvdAccessToken string  `json:"envdAccessToken"`
	Domain          *string `json:"domain"`
}

// listedSandboxJSON is E2B's ListedSandbox; detailJSON adds SandboxDetail's
// fields.
type listedSandboxJSON struct {
	TemplateID   string            `json:"templateID"`
	Alias        string            `json:"alias,omitempty"`
	SandboxID    string            `json:"sandboxID"`
	ClientID     string            `json:"clientID"`
	StartedAt    time.Time         `json:"startedAt"`
	EndAt        time.Time         `json:"endAt"`
	CPUCount     int               `json:"cpuCount"`
	MemoryMB     int               `json:"memoryMB"`
	DiskSizeMB   int               `json:"diskSizeMB"`
	Metadata     map[string]string `json:"metadata"`
	State        string            `json:"state"`
	EnvdVersion  string            `json:"envdVersion"`
	VolumeMounts []volumeMountJSON `json:"volumeMounts"`
}

type detailJSON struct {
	listedSandboxJSON
	EnvdAccessToken     string        `json:"envdAccessToken"`
	AllowInternetAccess *bool         `json:"allowInternetAccess"`
	Network             *networkJSON  `json:"network,omitempty"`
	Domain              *string       `json:"domain"`
	Lifecycle           lifecycleJSON `json:"lifecycle"`
}

type lifecycleJSON struct {
	AutoResume bool   `json:"autoResume"`
	OnTimeout  string `json:"onTimeout"` // kill | pause
}

type metricJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
	MemCache      int64     `json:"memCache"`
	DiskUsed      int64     `json:"diskUsed"`
	DiskTotal     int64     `json:"diskTotal"`
}

type templateJSON struct {
	TemplateID    string     `json:"templateID"`
	BuildID       string     `json:"buildID"`
	CPUCount      int        `json:"cpuCount"`
	MemoryMB      int        `json:"memoryMB"`
	DiskSizeMB    int        `json:"diskSizeMB"`
	Public        bool       `json:"public"`
	Aliases       []string   `json:"aliases"`
	Names         []string   `json:"names"`
	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
	CreatedBy     *struct{}  `json:"createdBy"`
	LastSpawnedAt *time.Time `json:"lastSpawnedAt"`
	SpawnCount    int64      `json:"spawnCount"`
	BuildCount    int        `json:"buildCount"`
	EnvdVersion   string     `json:"envdVersion"`
	BuildStatus   string     `json:"buildStatus"`
}

// e2bState maps hearth's lifecycle onto E2B's two visible states.
// Transitional states show as where they are heading or coming from.
func e2bState(st sandbox.State) string {
	switch st {
	case sandbox.StatePaused, sandbox.StatePausing:
		return "paused"
	case sandbox.StateRunning, sandbox.StateCreating, sandbox.StateResuming:
		return "running"
	default:
		return string(st) // stopping, error: not in E2B's enum, shown as is
	}
}

// statusesFor is the inverse of e2bState for list filters.
func statusesFor(state string) ([]sandbox.State, bool) {
	switch state {
	case "running":
		return []sandbox.State{sandbox.StateCreating, sandbox.StateRunning, sandbox.StateResuming}, true
	case "paused":
		return []sandbox.State{sandbox.StatePausing, sandbox.StatePaused}, true
	}
	return nil, false
}

func (s *server) domainPtr() *string {
	if s.domain == "" {
		return nil
	}
	d := s.domain
	return &d
}

func (s *server) sandboxView(sb store.Sandbox, alias string) sandboxJSON {
	return sandboxJSON{
		TemplateID: sb.TemplateID, SandboxID: sb.ID, Alias: alias, ClientID: s.clientID,
		EnvdVersion: EnvdVersion, EnvdAccessToken: sb.AccessToken, Domain: s.domainPtr(),
	}
}

func (s *server) listedView(sb store.Sandbox, aliases map[string]string, mounts []store.SandboxVolume) listedSandboxJSON {
	md := sb.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return listedSandboxJSON{
		TemplateID: sb.TemplateID, Alias: aliases[sb.TemplateID], SandboxID: sb.ID, ClientID: s.clientID,
		StartedAt: sb.CreatedAt.UTC(), EndAt: sb.EndAt.UTC(),
		CPUCount: sb.VCPUs, MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskSizeMB,
		Metadata: md, State: e2bState(sb.Status), EnvdVersion: EnvdVersion, VolumeMounts: mountsView(mounts),
	}
}

// templateAliases maps template IDs to names for the alias fields. A
// failure only loses aliases, never the answer.
func (s *server) templateAliases(r *http.Request, p service.Principal) map[string]string {
	ts, err := s.svc.ListTemplates(r.Context(), p)
	if err != nil {
		s.log.WarnContext(r.Context(), "e2b: list templates for aliases", "err", err)
		return nil
	}
	out := make(map[string]string, len(ts))
	for _, t := range ts {
		out[t.ID] = t.Name
	}
	return out
}

// present reports whether a raw JSON field carries a value (not absent,
// not null, not an empty object or array).
func present(raw json.RawMessage) bool {
	v := bytes.TrimSpace(raw)
	return len(v) > 0 && !bytes.Equal(v, []byte("null")) && !bytes.Equal(v, []byte("{}")) && !bytes.Equal(v, []byte("[]"))
}

// parseAutoResume accepts {"enabled": bool} (current) and a bare bool.
func parseAutoResume(raw json.RawMessage) (bool, error) {
	if !present(raw) {
		return false, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return b, nil
	}
	var obj struct {
		Enabled bool `json:"enabled"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return false, errStatus(http.StatusBadRequest, `autoResume: must be {"enabled": true|false}`)
	}
	return obj.Enabled, nil
}

func (s *server) create(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in newSandboxJSON
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.TemplateID == "" {
		return errStatus(http.StatusBadRequest, "templateID: is required")
	}
	// Refuse what hearth cannot honour instead of silently ignoring it: a
	// caller relying on egress rules or a mounted volume must know.
	switch {
	case present(in.Mcp):
		return errStatus(http.StatusBadRequest, "mcp: the MCP gateway is not supported by hearth")
	case present(in.Iam):
		return errStatus(http.StatusBadRequest, "iam: IAM tokens are not supported by hearth")
	}
	mounts, err := mountsInput(in.VolumeMounts)
	if err != nil {
		return err
	}
	autoResume, err := parseAutoResume(in.AutoResume)
	if err != nil {
		return err
	}
	timeout := defaultTimeoutS
	if in.Timeout != nil {
		timeout = *in.Timeout
	}
	var (
		allowOut, denyOut []string
		rules             []egress.HeaderRule
	)
	if in.Network != nil {
		if err := in.Network.supported(); err != nil {
			return err
		}
		allowOut, denyOut = in.Network.AllowOut, in.Network.DenyOut
		if rules, err = egressRules(in.Network.Rules); err != nil {
			return err
		}
	}
	sb, err := s.svc.CreateSandbox(r.Context(), p, service.CreateSandboxInput{
		Template:      in.TemplateID,
		TimeoutS:      &timeout,
		Env:           in.EnvVars,
		Metadata:      in.Metadata,
		AutoPause:     in.AutoPause != nil && *in.AutoPause,
		AutoResume:    autoResume,
		AllowInternet: in.AllowInternetAccess,
		AllowOut:      allowOut,
		DenyOut:       denyOut,
		Volumes:       mounts,
		EgressRules:   rules,
	})
	if err != nil {
		return err
	}
	alias := ""
	if in.TemplateID != sb.TemplateID {
		alias = in.TemplateID
	}
	writeJSON(w, http.StatusCreated, s.sandboxView(sb, alias))
	return nil
}

func (s *server) get(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	sb, err := s.svc.GetSandbox(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	mounts, err := s.svc.SandboxVolumes(r.Context(), p, sb.ID)
	if err != nil {
		return err
	}
	allow := sb.AllowInternet
	onTimeout := "kill"
	if sb.AutoPause {
		onTimeout = "pause"
	}
	listed := s.listedView(sb, s.templateAliases(r, p), mounts)
	writeJSON(w, http.StatusOK, detailJSON{
		listedSandboxJSON:   listed,
		EnvdAccessToken:     sb.AccessToken,
		AllowInternetAccess: &allow,
		Network:             networkView(sb),
		Domain:              s.domainPtr(),
		Lifecycle:           lifecycleJSON{AutoResume: sb.AutoResume, OnTimeout: onTimeout},
	})
	return nil
}

// parseMetadataFilter decodes E2B's metadata query: a URL-encoded
// "k=v&k2=v2" string whose keys and values are URL-encoded once more (the
// JS SDK encodes each pair, then the pairs, then the query parameter).
func parseMetadataFilter(q url.Values) (map[string]string, error) {
	raw := q.Get("metadata")
	if raw == "" {
		return nil, nil
	}
	pairs, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errStatus(http.StatusBadRequest, "metadata: must be URL-encoded key=value pairs joined by &")
	}
	out := make(map[string]string, len(pairs))
	for k, vs := range pairs {
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(vs[len(vs)-1])
		if err1 != nil || err2 != nil {
			return nil, errStatus(http.StatusBadRequest, "metadata: keys and values must be URL-encoded")
		}
		out[key] = val
	}
	return out, nil
}

// listV1 is the legacy list: running sandboxes only, no paging.
func (s *server) listV1(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	md, err := parseMetadataFilter(r.URL.Query())
	if err != nil {
		return err
	}
	running, _ := statusesFor("running")
	sbs, _, err := s.svc.ListSandboxes(r.Context(), p, store.SandboxFilter{Statuses: running, Metadata: md})
	if err != nil {
		return err
	}
	aliases := s.templateAliases(r, p)
	mounts, err := s.svc.TeamSandboxVolumes(r.Context(), p)
	if err != nil {
		return err
	}
	out := make([]listedSandboxJSON, len(sbs))
	for i, sb := range sbs {
		out[i] = s.listedView(sb, aliases, mounts[sb.ID])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Paging bounds of GET /v2/sandboxes (E2B's: default and maximum 100).
const (
	defaultPageSize = 100
	maxPageSize     = 100
)

func (s *server) listV2(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	q := r.URL.Query()
	md, err := parseMetadataFilter(q)
	if err != nil {
		return err
	}
	f := store.SandboxFilter{Metadata: md, After: q.Get("nextToken")}
	states := "running,paused"
	if v := q.Get("state"); v != "" {
		states = v
	}
	for _, st := range strings.Split(states, ",") {
		ss, ok := statusesFor(strings.TrimSpace(st))
		if !ok {
			return errStatus(http.StatusBadRequest, "state: must be running or paused, got %q", st)
		}
		f.Statuses = append(f.Statuses, ss...)
	}
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	var startedAfter time.Time
	if v := q.Get("startedAfter"); v != "" {
		if startedAfter, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return errStatus(http.StatusBadRequest, "startedAfter: must be an RFC 3339 date-time")
		}
	}
	if v := q.Get("order"); v != "" && v != "asc" && v != "desc" {
		return errStatus(http.StatusBadRequest, "order: must be asc or desc")
	}
	f.Limit = limit
	sbs, next, err := s.svc.ListSandboxes(r.Context(), p, f)
	if err != nil {
		return err
	}
	if next != "" {
		// The cursor follows the last row scanned, not the last returned:
		// the filters below never make a page skip rows (a page may come
		// out short).
		w.Header().Set("X-Next-Token", next)
	}
	aliases := s.templateAliases(r, p)
	mounts, err := s.svc.TeamSandboxVolumes(r.Context(), p)
	if err != nil {
		return err
	}
	tpl := q.Get("template")
	out := make([]listedSandboxJSON, 0, len(sbs))
	for _, sb := range sbs {
		if !startedAfter.IsZero() && sb.CreatedAt.Before(startedAfter) {
			continue
		}
		if tpl != "" && tpl != sb.TemplateID && tpl != aliases[sb.TemplateID] {
			continue
		}
		out = append(out, s.listedView(sb, aliases, mounts[sb.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) kill(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	if err := s.svc.DestroySandbox(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) setTimeout(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Timeout *int `json:"timeout"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Timeout == nil {
		return errStatus(http.StatusBadRequest, "timeout: is required (seconds)")
	}
	if _, err := s.svc.SetSandboxTimeout(r.Context(), p, r.PathValue("id"), *in.Timeout); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// pause answers 409 when the sandbox is already paused: the SDK reads it as
// "was already paused" (pause() returns false).
func (s *server) pause(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Memory *bool `json:"memory"` // hearth always keeps memory
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	id := r.PathValue("id")
	_, changed, err := s.svc.PauseSandbox(r.Context(), p, id)
	if err != nil {
		return err
	}
	if !changed {
		return errStatus(http.StatusConflict, "sandbox %s is already paused", id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// resume is the legacy route: 201 with the sandbox, 409 when it runs.
func (s *server) resume(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Timeout   *int  `json:"timeout"`
		AutoPause *bool `json:"autoPause"` // deprecated upstream; the create-time setting stays
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	id := r.PathValue("id")
	// Connect without a timeout decides "already running" and resumes in
	// one step; the legacy route then sets the timeout as given.
	_, resumed, err := s.svc.ConnectSandbox(r.Context(), p, id, 0)
	if err != nil {
		return err
	}
	if !resumed {
		return errStatus(http.StatusConflict, "sandbox %s is already running", id)
	}
	timeout := defaultTimeoutS
	if in.Timeout != nil {
		timeout = *in.Timeout
	}
	sb, err := s.svc.SetSandboxTimeout(r.Context(), p, id, timeout)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, s.sandboxView(sb, ""))
	return nil
}

func (s *server) connect(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Timeout *int  `json:"timeout"`
		Memory  *bool `json:"memory"` // false = reboot from disk; hearth restores memory
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	timeout := 0
	if in.Timeout != nil {
		timeout = *in.Timeout
	}
	sb, resumed, err := s.svc.ConnectSandbox(r.Context(), p, r.PathValue("id"), timeout)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if resumed {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.sandboxView(sb, ""))
	return nil
}

// sandboxMetrics answers E2B's metrics list with the current sample of a
// running sandbox (hearth keeps no history) and nothing for a paused one.
func (s *server) sandboxMetrics(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	sb, err := s.svc.GetSandbox(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := []metricJSON{}
	if s.metrics != nil && sb.Status == sandbox.StateRunning {
		m, err := s.currentMetric(r, sb)
		if err != nil {
			return err
		}
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) templates(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	ts, err := s.svc.ListTemplates(r.Context(), p)
	if err != nil {
		return err
	}
	out := make([]templateJSON, len(ts))
	for i, t := range ts {
		disk := t.DiskSizeMB
		if disk == 0 {
			disk = sandbox.DefaultDiskSizeMB
		}
		out[i] = templateJSON{
			TemplateID: t.ID, BuildID: t.HostTemplateID(), CPUCount: t.VCPUs, MemoryMB: t.MemoryMB, DiskSizeMB: disk,
			Public: t.TeamID == store.PlatformTeamID, Aliases: []string{t.Name}, Names: []string{t.Name},
			CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.CreatedAt.UTC(), BuildCount: 1,
			EnvdVersion: EnvdVersion, BuildStatus: e2bBuildStatus(t.BuildStatus),
		}
	}
	slices.SortFunc(out, func(a, b templateJSON) int { return strings.Compare(a.Names[0], b.Names[0]) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// networkJSON is E2B's SandboxNetworkConfig (create, getInfo) and
// SandboxNetworkUpdateConfig (PUT .../network, which adds
// allow_internet_access). hearth enforces allowOut and denyOut on IPs and
// CIDRs; the fields it cannot honour are refused, never ignored.
type networkJSON struct {
	AllowOut            []string        `json:"allowOut,omitempty"`
	DenyOut             []string        `json:"denyOut,omitempty"`
	AllowPublicTraffic  *bool           `json:"allowPublicTraffic,omitempty"`
	AllowInternetAccess *bool           `json:"allow_internet_access,omitempty"`
	EgressProxy         json.RawMessage `json:"egressProxy,omitempty"`
	MaskRequestHost     *string         `json:"maskRequestHost,omitempty"`
	Rules               json.RawMessage `json:"rules,omitempty"`
	HTTPSPorts          json.RawMessage `json:"httpsPorts,omitempty"`
}

func (n *networkJSON) supported() error {
	switch {
	case n.AllowPublicTraffic != nil && !*n.AllowPublicTraffic:
		return errStatus(http.StatusBadRequest, "network.allowPublicTraffic: false is not supported by hearth (sandbox URLs need the envd access token for envd only)")
	case present(n.EgressProxy):
		return errStatus(http.StatusBadRequest, "network.egressProxy: egress proxies are not supported by hearth")
	case n.MaskRequestHost != nil && *n.MaskRequestHost != "":
		return errStatus(http.StatusBadRequest, "network.maskRequestHost: not supported by hearth")
	case present(n.HTTPSPorts):
		return errStatus(http.StatusBadRequest, "network.httpsPorts: not supported by hearth")
	}
	return nil
}

// networkView is getInfo's network: the rules in force (canonical CIDRs),
// absent when there are none.
func networkView(sb store.Sandbox) *networkJSON {
	if len(sb.AllowOut) == 0 && len(sb.DenyOut) == 0 {
		return nil
	}
	return &networkJSON{AllowOut: sb.AllowOut, DenyOut: sb.DenyOut}
}

// updateNetwork is PUT /sandboxes/{id}/network: it replaces the egress
// configuration (an omitted field is cleared) and applies it to a running
// sandbox at once.
func (s *server) updateNetwork(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in networkJSON
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := in.supported(); err != nil {
		return err
	}
	if present(in.Rules) {
		// A running sandbox's proxy, its guest's trust and the secrets it
		// holds are set up at create only.
		return errStatus(http.StatusNotImplemented, "network.rules: egress rules are set at create only; hearth cannot change them on an existing sandbox")
	}
	_, err := s.svc.UpdateSandboxNetwork(r.Context(), p, r.PathValue("id"), service.NetworkInput{
		AllowInternet: in.AllowInternetAccess, AllowOut: in.AllowOut, DenyOut: in.DenyOut,
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
