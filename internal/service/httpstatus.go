package service

import "net/http"

// HTTPStatus is the one mapping from error kinds to HTTP statuses, shared
// by both REST surfaces (native /v1 and E2B-compatible) so they never
// disagree. 501 means "never here" (e.g. a host without snapshots), as
// opposed to 503's "not now".
func HTTPStatus(k Kind) int {
	switch k {
	case KindInvalidArgument:
		return http.StatusBadRequest
	case KindNotFound:
		return http.StatusNotFound
	case KindConflict:
		return http.StatusConflict
	case KindUnauthenticated:
		return http.StatusUnauthorized
	case KindPermissionDenied:
		return http.StatusForbidden
	case KindUnavailable:
		return http.StatusServiceUnavailable
	case KindUnimplemented:
		return http.StatusNotImplemented
	case KindTooLarge:
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusInternalServerError
	}
}
