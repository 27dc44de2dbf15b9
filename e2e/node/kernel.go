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
