package archive

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// POSIX ACLs travel twice in berth's archives: as the binary xattrs
// (SCHILY.xattr.system.posix_acl_*), which GNU tar --xattrs-include='*'
// restores (systemd 257's importd), and as the text records GNU tar
// --acls writes (SCHILY.acl.access, SCHILY.acl.default), which libarchive
// reads (systemd 258's importd and later, which drops the binary ones).

const (
	aclAccess   = "system.posix_acl_access"
	aclTextKeys = "SCHILY.acl."

	aclVersion = 2
	// Entry tags of the binary form (linux/posix_acl_xattr.h).
	tagUserObj  = 0x01
	tagUser     = 0x02
	tagGroupObj = 0x04
	tagGroup    = 0x08
	tagMask     = 0x10
	tagOther    = 0x20
)

var aclTags = []struct {
	tag  uint16
	name string
	id   bool
}{{tagUserObj, "user", false}, {tagUser, "user", true}, {tagGroupObj, "group", false}, {tagGroup, "group", true}, {tagMask, "mask", false}, {tagOther, "other", false}}

// aclRecord names the text record of an ACL xattr ("" if it is none).
func aclRecord(xattr string) string {
	switch xattr {
	case aclAccess:
		return aclTextKeys + "access"
	case aclDefault:
		return aclTextKeys + "default"
	}
	return ""
}

// aclText turns a binary ACL into GNU tar's text form with numeric ids:
// "user::rw-,user:1234:r--,group::r--,mask::r--,other::r--".
func aclText(b []byte) (string, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return "", errors.New("not a POSIX ACL")
	}
	var out []string
	for e := b[4:]; len(e) > 0; e = e[8:] {
		tag, perm, id := binary.LittleEndian.Uint16(e), binary.LittleEndian.Uint16(e[2:]), binary.LittleEndian.Uint32(e[4:])
		name := ""
		for _, t := range aclTags {
			if t.tag == tag {
				name = t.name + ":"
				if t.id {
					name += strconv.FormatUint(uint64(id), 10)
				}
			}
		}
		if name == "" {
			return "", fmt.Errorf("unknown ACL tag %#x", tag)
		}
		out = append(out, name+":"+perms(perm))
	}
	return strings.Join(out, ","), nil
}

func perms(p uint16) string {
	b := []byte("---")
	for i, c := range "rwx" {
		if p&(4>>i) != 0 {
			b[i] = byte(c)
		}
	}
	return string(b)
}

// aclBinary parses GNU tar's or star's text form (entries separated by
// commas or newlines; star adds the numeric id as a fourth field) into
// the binary form. A named entry needs a numeric id: names would be
// looked up on this host, not the image's.
func aclBinary(text string) ([]byte, error) {
	type entry struct {
		tag  uint16
		perm uint16
		id   uint32
	}
	var ents []entry
	for _, ent := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == '\n' }) {
		f := strings.Split(strings.TrimSpace(ent), ":")
		if len(f) < 3 || len(f) > 4 {
			return nil, fmt.Errorf("ACL entry %q", ent)
		}
		kind, qual := f[0], f[1]
		if kind == "u" {
			kind = "user"
		} else if kind == "g" {
			kind = "group"
		} else if kind == "m" {
			kind = "mask"
		} else if kind == "o" {
			kind = "other"
		}
		var tag uint16
		id := uint64(0xffffffff) // ACL_UNDEFINED_ID, for entries without one
		for _, t := range aclTags {
			if t.name == kind && t.id == (qual != "") {
				tag = t.tag
			}
		}
		if tag == 0 {
			return nil, fmt.Errorf("ACL entry %q", ent)
		}
		if qual != "" {
			n := qual
			if len(f) == 4 {
				n = f[3]
			}
			var err error
			if id, err = strconv.ParseUint(n, 10, 32); err != nil {
				return nil, fmt.Errorf("ACL entry %q: the qualifier is no numeric id", ent)
			}
		}
		var p uint16
		for i, c := range "rwx" {
			switch f[2][i:min(i+1, len(f[2]))] {
			case string(c):
				p |= 4 >> i
			case "-":
			default:
				return nil, fmt.Errorf("ACL entry %q: permissions", ent)
			}
		}
		if len(f[2]) != 3 {
			return nil, fmt.Errorf("ACL entry %q: permissions", ent)
		}
		ents = append(ents, entry{tag, p, uint32(id)})
	}
	// The kernel takes entries in tag order, named ones by id.
	slices.SortFunc(ents, func(a, b entry) int { return cmp.Or(cmp.Compare(a.tag, b.tag), cmp.Compare(a.id, b.id)) })
	out := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range ents {
		out = binary.LittleEndian.AppendUint16(out, e.tag)
		out = binary.LittleEndian.AppendUint16(out, e.perm)
		out = binary.LittleEndian.AppendUint32(out, e.id)
	}
	return out, nil
}

// modeACL is the minimal access ACL that mode amounts to.
func modeACL(mode uint32) string {
	return "user::" + perms(uint16(mode>>6&7)) + ",group::" + perms(uint16(mode>>3&7)) + ",other::" + perms(uint16(mode&7))
}
