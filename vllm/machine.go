package vllm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// gpuDeviceFile exists on a machine where the NVIDIA driver sees a GPU.
const gpuDeviceFile = "/dev/nvidia0"

// Detect returns DeviceGPU when this machine has an NVIDIA GPU (the driver's
// /dev/nvidia0), else DeviceCPU. nvidia-smi alone is not asked: it is
// installed on machines whose GPUs are gone, and a container may have it
// without a device.
func Detect() Device {
	if _, err := os.Stat(gpuDeviceFile); err == nil {
		return DeviceGPU
	}
	return DeviceCPU
}

// BinaryName is the executable vLLM installs.
const BinaryName = "vllm"

// ErrNoBinary is returned (wrapped) by FindBinary when no vllm executable
// is found.
var ErrNoBinary = errors.New("vllm: no vllm executable")

// FindBinary returns the vllm executable to run: path when it is set (it
// must be an executable file), else "vllm" next to the thaw executable
// exe (bin/vllm, which `make deps` installs), else "vllm" on PATH.
func FindBinary(path, exe string) (string, error) {
	if path != "" {
		if err := executable(path); err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoBinary, err)
		}
		return path, nil
	}
	var tried []string
	if exe != "" {
		next := filepath.Join(filepath.Dir(exe), BinaryName)
		if executable(next) == nil {
			return next, nil
		}
		tried = append(tried, next)
	}
	if p, err := exec.LookPath(BinaryName); err == nil {
		return p, nil
	}
	tried = append(tried, BinaryName+" on PATH")
	return "", fmt.Errorf("%w: tried %v; install vLLM (make deps puts it in bin/) or pass its path", ErrNoBinary, tried)
}

// executable checks that path is a regular file someone may execute.
func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}
