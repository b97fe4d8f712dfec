package dashboard

import (
	"cmp"
	"net/http"
	"path"
	"slices"
	"time"

	"connectrpc.com/connect"

	fsrpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
)

type dirEntry struct {
	Name        string     `json:"name"`
	Path        string     `json:"path"`
	Type        string     `json:"type"` // file | dir | symlink
	Size        int64      `json:"size"`
	Permissions string     `json:"permissions,omitempty"`
	Modified    *time.Time `json:"modified,omitempty"`
	Target      string     `json:"symlink_target,omitempty"`
}

// listDir: GET /ui/sandboxes/{id}/dir?path=&team= → {path, entries}, one
// level, directories first. The REST API has file read/write but no listing,
// so the file browser gets it here, from envd's filesystem service. A GET
// that changes nothing: no CSRF token needed (the cookie is SameSite=Strict).
func (h *handler) listDir(w http.ResponseWriter, r *http.Request) {
	jwt := sessionToken(r)
	if jwt == "" {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	if h.term == nil {
		writeError(w, http.StatusNotImplemented, "file browsing is not available on this server")
		return
	}
	p := r.URL.Query().Get("path")
	if p == "" {
		p = "/"
	}
	if !path.IsAbs(p) {
		writeError(w, http.StatusBadRequest, "path must be absolute")
		return
	}
	p = path.Clean(p)
	cli, err := h.term.Envd(r.Context(), jwt, r.URL.Query().Get("team"), r.PathValue("id"))
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	res, err := cli.Filesystem().ListDir(r.Context(), connect.NewRequest(&fsrpc.ListDirRequest{Path: p, Depth: 1}))
	if err != nil {
		switch connect.CodeOf(err) {
		case connect.CodeNotFound:
			writeError(w, http.StatusNotFound, "no such directory: "+p)
		case connect.CodeInvalidArgument, connect.CodeFailedPrecondition:
			writeError(w, http.StatusBadRequest, "not a directory: "+p)
		case connect.CodePermissionDenied:
			writeError(w, http.StatusForbidden, "permission denied: "+p)
		default:
			h.log.WarnContext(r.Context(), "dashboard: list dir", "path", p, "err", err)
			writeError(w, http.StatusBadGateway, "listing failed: "+err.Error())
		}
		return
	}
	out := make([]dirEntry, 0, len(res.Msg.GetEntries()))
	for _, e := range res.Msg.GetEntries() {
		d := dirEntry{Name: e.GetName(), Path: e.GetPath(), Size: e.GetSize(), Permissions: e.GetPermissions(), Target: e.GetSymlinkTarget()}
		switch e.GetType() {
		case fsrpc.FileType_FILE_TYPE_DIRECTORY:
			d.Type = "dir"
		case fsrpc.FileType_FILE_TYPE_SYMLINK:
			d.Type = "symlink"
		default:
			d.Type = "file"
		}
		if e.GetModifiedTime() != nil {
			t := e.GetModifiedTime().AsTime()
			d.Modified = &t
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b dirEntry) int {
		if (a.Type == "dir") != (b.Type == "dir") {
			if a.Type == "dir" {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "entries": out})
}
