//go:build e2e

package node

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// kernel is the Debian kernel the nodes boot, with its modules on the host.
type kernel struct {
	image   string // /boot/vmlinuz-<version>
	version string
}

// findKernel picks the newest /boot/vmlinuz-* whose modules are installed;
// versions change with every linux-image-amd64 update, so nothing is pinned.
func findKernel() (kernel, error) {
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
			return kernel{image: img, version: v}, nil
		}
	}
	return kernel{}, fmt.Errorf("no /boot/vmlinuz-* with modules in /lib/modules (install linux-image-amd64)")
}

// initramfsModules are what the node needs before it can reach its root over
// 9p; everything else is loaded later from the host's /lib/modules.
func initramfsModules() []string { return []string{"virtio_pci", "9pnet_virtio", "9p"} }

// moduleFiles lists the module files to insmod, dependencies first, as
// modprobe resolves them for the node's kernel.
func (k kernel) moduleFiles(names []string) ([]string, error) {
	args := append([]string{"-S", k.version, "-a", "--show-depends"}, names...)
	out, err := command("modprobe", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("modprobe --show-depends: %v: %s", err, out)
	}
	var files []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// "builtin X" lines need nothing; modprobe repeats shared dependencies.
		if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
			continue
		}
		seen[f[1]] = true
		files = append(files, f[1])
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("modprobe listed no modules for %v", names)
	}
	return files, nil
}

// compressedKernelFormats are the payload formats a bzImage may carry, by
// magic number, with the command that decompresses a stream of them and
// ignores what follows the payload.
func compressedKernelFormats() []struct {
	magic []byte
	argv  []string
} {
	return []struct {
		magic []byte
		argv  []string
	}{
		{[]byte("\xfd7zXZ\x00"), []string{"xz", "-dc", "--single-stream"}}, // Debian's
		{[]byte("\x28\xb5\x2f\xfd"), []string{"zstd", "-dcq"}},
	}
}

// extractVmlinux writes the uncompressed kernel ELF held in the bzImage.
// qemu boots such an ELF directly through its PVH entry point, which spares
// the emulated CPU the decompression: about 3 of the 7 seconds a boot takes
// under TCG.
func extractVmlinux(bzImage, out string) error {
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	for _, f := range compressedKernelFormats() {
		i := bytes.Index(data, f.magic)
		if i < 0 {
			continue
		}
		cmd := command(f.argv[0], f.argv[1:]...)
		cmd.Stdin = bytes.NewReader(data[i:])
		elfData, err := cmd.Output()
		if err != nil || !bytes.HasPrefix(elfData, []byte("\x7fELF")) {
			continue
		}
		return os.WriteFile(out, elfData, 0o644)
	}
	return fmt.Errorf("no kernel payload found in %s", bzImage)
}
