package e2bapi

import (
	"net/http"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Secrets: E2B's Secret API over hearth's team secrets. Values go in and
// never come out. Using a secret from a sandbox (the SDK's egress header
// transforms, `${e2b.secrets.NAME}`) needs a host-side egress proxy hearth
// does not have: create answers 501 for it (see create).

// secretJSON is E2B's Secret.
type secretJSON struct {
	SecretID       string            `json:"secretID"`
	Name           string            `json:"name"`
	CurrentVersion int64             `json:"currentVersion"`
	Metadata       map[string]string `json:"metadata"`
	CreatedAt      time.Time         `json:"createdAt"`
	UpdatedAt      time.Time         `json:"updatedAt"`
}

func secretView(s store.Secret) secretJSON {
	md := s.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return secretJSON{
		SecretID: s.ID, Name: s.Name, CurrentVersion: s.Version, Metadata: md,
		CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC(),
	}
}

func (s *server) secretRoutes() []route {
	return []route{
		{"POST /secrets", s.createSecret},
		{"GET /secrets", s.listSecrets},
		{"GET /secrets/{id}", s.getSecret},
		{"POST /secrets/{id}", s.updateSecret},
		{"DELETE /secrets/{id}", s.deleteSecret},
	}
}

func (s *server) createSecret(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Name     string            `json:"name"`
		Value    *string           `json:"value"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Value == nil {
		return errStatus(http.StatusBadRequest, "value: is required")
	}
	sec, err := s.svc.CreateSecret(r.Context(), p, in.Name, *in.Value, in.Metadata)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, secretView(sec))
	return nil
}

func (s *server) listSecrets(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	secs, next, err := s.svc.ListSecrets(r.Context(), p, q.Get("nextToken"), limit)
	if err != nil {
		return err
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	out := make([]secretJSON, len(secs))
	for i, sec := range secs {
		out[i] = secretView(sec)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getSecret(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	sec, err := s.svc.GetSecret(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretView(sec))
	return nil
}

func (s *server) updateSecret(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	var in struct {
		Value    *string           `json:"value"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Value == nil {
		return errStatus(http.StatusBadRequest, "value: is required")
	}
	sec, err := s.svc.UpdateSecret(r.Context(), p, r.PathValue("id"), *in.Value, in.Metadata)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretView(sec))
	return nil
}

func (s *server) deleteSecret(w http.ResponseWriter, r *http.Request, p service.Principal) error {
	if err := s.svc.DeleteSecret(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
