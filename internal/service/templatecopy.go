package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// templateHolders lists the hosts holding tpl's files: its first host
// (where it was built or snapshotted) and the copies made since. None
// for templates every host has (base, tiny).
func (s *Service) templateHolders(ctx context.Context, tpl store.Template) ([]string, error) {
	return s.holders(ctx, tpl.Host, tpl.HostTemplateID())
}

// holders lists first and the hosts with a copy of hostTemplateID.
func (s *Service) holders(ctx context.Context, first, hostTemplateID string) ([]string, error) {
	if first == "" {
		return nil, nil
	}
	copies, err := s.store.TemplateCopyHosts(ctx, hostTemplateID)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", hostTemplateID, err)
	}
	holders := []string{first}
	for _, h := range copies {
		if !slices.Contains(holders, h) {
			holders = append(holders, h)
		}
	}
	return holders, nil
}

// holderClients returns the client of every host holding hostTemplateID
// (first and its copies), all or none: a deletion fails before any host
// lost its files when one holder is unavailable.
func (s *Service) holderClients(ctx context.Context, first, hostTemplateID string) ([]HostClient, error) {
	holders, err := s.holders(ctx, first, hostTemplateID)
	if err != nil {
		return nil, err
	}
	clients := make([]HostClient, 0, len(holders))
	for _, h := range holders {
		hc, err := s.hosts.Get(ctx, h)
		if err != nil {
			return nil, err
		}
		clients = append(clients, hc)
	}
	return clients, nil
}

// ensureTemplate copies tpl's files to hostID (client dst) from the first
// holder that answers, unless hostID is a holder; the copy is recorded.
// The target checks the stream's hash and renames the files into place
// only then, so a failed copy leaves nothing usable behind.
func (s *Service) ensureTemplate(ctx context.Context, tpl store.Template, holders []string, hostID string, dst HostClient) error {
	if len(holders) == 0 || slices.Contains(holders, hostID) {
		return nil
	}
	id := tpl.HostTemplateID()
	var errs []error
	for _, from := range holders {
		src, err := s.hosts.Get(ctx, from)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cp, ok := src.(TemplateCopier)
		if !ok {
			errs = append(errs, fmt.Errorf("host %s cannot send templates", from))
			continue
		}
		t0 := time.Now()
		n, err := cp.CopyTemplateTo(ctx, id, dst)
		if err != nil {
			errs = append(errs, fmt.Errorf("from host %s: %w", from, err))
			continue
		}
		s.log.InfoContext(ctx, "template copied", "template", tpl.Name, "host_template_id", id, "from", from, "to", hostID,
			"bytes", n, "ms", time.Since(t0).Milliseconds())
		if err := s.store.AddTemplateCopy(context.WithoutCancel(ctx), tpl.ID, id, hostID); err != nil {
			return fmt.Errorf("record the copy of template %s on host %s: %w", tpl.Name, hostID, err)
		}
		return nil
	}
	return fmt.Errorf("copy template %s to host %s: %w", tpl.Name, hostID, errors.Join(errs...))
}
