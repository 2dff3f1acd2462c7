package shop

import "os/exec"

// Run runs a shell command given by the caller.
func Run(command string) error {
	return exec.Command("sh", "-c", command).Run() // #nosec G204
}
