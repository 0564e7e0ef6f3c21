// Umbrella header for the CLibiscsi system-library module (libiscsi, used by tests only).
// libiscsi's headers use fixed-width integers, size_t and sockaddr types without always
// including what they need, so the prerequisites come first.
#ifndef CLIBISCSI_SHIM_H
#define CLIBISCSI_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#endif
