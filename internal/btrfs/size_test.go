package btrfs

import "testing"

func TestIoctlArgSizes(t *testing.T) {
	if n := sizeofRootref(); n != 4096 {
		t.Errorf("btrfs_ioctl_get_subvol_rootref_args is %d bytes, want 4096", n)
	}
	if n := sizeofSubvolInfo(); n != 504 {
		t.Errorf("btrfs_ioctl_get_subvol_info_args is %d bytes, want 504", n)
	}
	if n := sizeofInoLookupUser(); n != 4096 {
		t.Errorf("btrfs_ioctl_ino_lookup_user_args is %d bytes, want 4096", n)
	}
}
