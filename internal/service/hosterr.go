package service

// hostErrFor reports a failed call to a host: KindUnimplemented when the host
// cannot do op at all, KindUnavailable otherwise. op completes "host failed
// to ..." (e.g. "pause the sandbox").
func hostErrFor(op string, err error) error {
	if hostUnimplemented(err) {
		return Unimplemented("the sandbox's host cannot "+op, err)
	}
	return Unavailable("host failed to "+op, err)
}

// hostUnimplemented recognises a host's "cannot do this here" answer
// (HostClients report it as KindUnimplemented).
func hostUnimplemented(err error) bool { return KindOf(err) == KindUnimplemented }

// hostRefused reports whether a host answered err without touching the VM:
// it cannot do the operation at all, or it rejected the request's
// arguments. Any other failure (transport, VMM, a VM that is gone) may have
// happened midway, so the VM's state is unknown.
func hostRefused(err error) bool {
	return hostUnimplemented(err) || KindOf(err) == KindInvalidArgument
}
