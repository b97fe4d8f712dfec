package api

import "net/http"

// authMode says who may call a route.
type authMode int

const (
	authNone authMode = iota
	// authUser: a person, Authorization: Bearer <session JWT>.
	authUser
	// authTeam: a program with X-API-Key, or a person with a Bearer token
	// (acting for X-Team-ID, default their own team).
	authTeam
)

type body int

const (
	bodyJSON   body = iota // JSON, MaxJSONBytes
	bodyUpload             // raw stream, MaxUploadBytes
)

// route is one row of the route table. The table is the single source of
// the router and is checked against openapi.yaml in tests.
type route struct {
	method, path string
	auth         authMode
	body         body
	authLimited  bool // per-IP rate limit (signup, login)
	handle       handlerFunc
}

func (s *server) routes() []route {
	return []route{
		{method: http.MethodPost, path: "/v1/auth/signup", authLimited: true, handle: s.signup},
		{method: http.MethodPost, path: "/v1/auth/login", authLimited: true, handle: s.login},
		{method: http.MethodGet, path: "/v1/me", auth: authUser, handle: s.me},

		{method: http.MethodGet, path: "/v1/teams/{team_id}/members", auth: authUser, handle: s.listTeamMembers},
		{method: http.MethodPost, path: "/v1/teams/{team_id}/members", auth: authUser, handle: s.addTeamMember},
		{method: http.MethodPatch, path: "/v1/teams/{team_id}/members/{user_id}", auth: authUser, handle: s.setTeamMemberRole},
		{method: http.MethodDelete, path: "/v1/teams/{team_id}/members/{user_id}", auth: authUser, handle: s.removeTeamMember},

		{method: http.MethodPost, path: "/v1/api-keys", auth: authUser, handle: s.createAPIKey},
		{method: http.MethodGet, path: "/v1/api-keys", auth: authUser, handle: s.listAPIKeys},
		{method: http.MethodDelete, path: "/v1/api-keys/{id}", auth: authUser, handle: s.deleteAPIKey},

		{method: http.MethodPost, path: "/v1/sandboxes", auth: authTeam, handle: s.createSandbox},
		{method: http.MethodGet, path: "/v1/sandboxes", auth: authTeam, handle: s.listSandboxes},
		{method: http.MethodGet, path: "/v1/sandboxes/{id}", auth: authTeam, handle: s.getSandbox},
		{method: http.MethodDelete, path: "/v1/sandboxes/{id}", auth: authTeam, handle: s.deleteSandbox},
		{method: http.MethodPost, path: "/v1/sandboxes/{id}/exec", auth: authTeam, handle: s.exec},
		{method: http.MethodPost, path: "/v1/sandboxes/{id}/pause", auth: authTeam, handle: s.pauseSandbox},
		{method: http.MethodPost, path: "/v1/sandboxes/{id}/resume", auth: authTeam, handle: s.resumeSandbox},
		{method: http.MethodPost, path: "/v1/sandboxes/{id}/timeout", auth: authTeam, handle: s.setTimeout},
		{method: http.MethodPut, path: "/v1/sandboxes/{id}/network", auth: authTeam, handle: s.setNetwork},
		{method: http.MethodGet, path: "/v1/sandboxes/{id}/metrics", auth: authTeam, handle: s.sandboxMetrics},
		{method: http.MethodGet, path: "/v1/sandboxes/{id}/files", auth: authTeam, handle: s.readFile},
		{method: http.MethodPut, path: "/v1/sandboxes/{id}/files", auth: authTeam, body: bodyUpload, handle: s.writeFile},

		{method: http.MethodGet, path: "/v1/templates", auth: authTeam, handle: s.listTemplates},
		{method: http.MethodDelete, path: "/v1/templates/{name}", auth: authTeam, handle: s.deleteTemplate},
		{method: http.MethodPut, path: "/v1/build-contexts", auth: authTeam, body: bodyUpload, handle: s.uploadBuildContext},
		{method: http.MethodPost, path: "/v1/templates/{name}/builds", auth: authTeam, handle: s.createBuild},
		{method: http.MethodGet, path: "/v1/templates/{name}/builds", auth: authTeam, handle: s.listBuilds},
		{method: http.MethodGet, path: "/v1/templates/{name}/builds/{build_id}", auth: authTeam, handle: s.getBuild},
		{method: http.MethodGet, path: "/v1/templates/{name}/builds/{build_id}/logs", auth: authTeam, handle: s.buildLogs},
		{method: http.MethodPost, path: "/v1/templates/{name}/builds/{build_id}/cancel", auth: authTeam, handle: s.cancelBuild},
		{method: http.MethodPost, path: "/v1/snapshots", auth: authTeam, handle: s.createSnapshot},
		{method: http.MethodGet, path: "/v1/snapshots", auth: authTeam, handle: s.listSnapshots},
		{method: http.MethodDelete, path: "/v1/snapshots/{name}", auth: authTeam, handle: s.deleteSnapshot},
		{method: http.MethodPost, path: "/v1/volumes", auth: authTeam, handle: s.createVolume},
		{method: http.MethodGet, path: "/v1/volumes", auth: authTeam, handle: s.listVolumes},
		{method: http.MethodGet, path: "/v1/volumes/{name}", auth: authTeam, handle: s.getVolume},
		{method: http.MethodDelete, path: "/v1/volumes/{name}", auth: authTeam, handle: s.deleteVolume},

		{method: http.MethodGet, path: "/v1/admin/templates", auth: authUser, handle: s.adminTemplates},
		{method: http.MethodPost, path: "/v1/admin/hosts", auth: authUser, handle: s.createHostToken},
		{method: http.MethodGet, path: "/v1/admin/hosts", auth: authUser, handle: s.listHosts},
		{method: http.MethodPost, path: "/v1/admin/hosts/{id}/drain", auth: authUser, handle: s.drainHost},
		{method: http.MethodPost, path: "/v1/admin/hosts/{id}/ready", auth: authUser, handle: s.undrainHost},
		{method: http.MethodDelete, path: "/v1/admin/hosts/{id}", auth: authUser, handle: s.removeHost},

		{method: http.MethodGet, path: "/healthz", handle: s.healthz},
		{method: http.MethodGet, path: "/openapi.yaml", handle: s.openapi},
	}
}
