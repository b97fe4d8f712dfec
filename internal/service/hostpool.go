package service

import (
	"context"
	"slices"
)

// SingleHost is a HostPool of at most one host. A zero SingleHost (nil
// Client) has no hosts: every pick fails with "no hosts available".
type SingleHost struct {
	ID     string
	Client HostClient
}

var _ HostPool = SingleHost{}

func (p SingleHost) Pick(_ context.Context, req PlacementRequest) (string, HostClient, error) {
	if p.Client == nil {
		return "", nil, Unavailable("no hosts available", nil)
	}
	if req.Host != "" && req.Host != p.ID {
		return "", nil, Unavailable("host "+req.Host+", which holds the sandbox's volumes, is not available", nil)
	}
	if len(req.TemplateHosts) > 0 && !slices.Contains(req.TemplateHosts, p.ID) {
		return "", nil, Unavailable("the host holding template "+req.TemplateID+" is not available", nil)
	}
	return p.ID, p.Client, nil
}

func (p SingleHost) Get(_ context.Context, hostID string) (HostClient, error) {
	if p.Client == nil || hostID != p.ID {
		return nil, Unavailable("host "+hostID+" is not available", nil)
	}
	return p.Client, nil
}
