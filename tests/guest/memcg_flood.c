// SPDX-License-Identifier: GPL-2.0
/*
 * memcg_flood - the flooder of test_memcg.py: joins a memory cgroup, then opens files of
 * /dev/tpmrs0 (O_NONBLOCK, as tpm2-tss does) and fills each with objects until tpmrs
 * refuses.
 *
 * In C, with every page locked in (mlockall) before the limit is set, so that the flooder's
 * own memory does not grow during the flood: at the cgroup's limit a new page of the test
 * program itself (a Python process touches new pages all the time) would be charged too and
 * wake the cgroup's OOM killer, which is not what is tested.
 *
 * usage: memcg_flood CGROUP_DIR COMMAND_HEX
 *   COMMAND_HEX  the object-creating command (CreatePrimary), hex
 * Protocol on stdin/stdout: prints "ready" once in the cgroup with a spare file open; after
 * a line on stdin, floods and prints "WHERE ERRNO FILES OBJECTS SPARE_OBJECTS SPARE_ERRNO"
 * (WHERE: open or command; the spare file is filled last, at the limit); then keeps every
 * file open until stdin is closed, closes them and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_FILES 4096
#define TPM_RC_OBJECT_MEMORY_RM 0x000B0902u

static unsigned char cmd[4096], rsp[4096];
static size_t cmd_len;
static int fds[MAX_FILES];

static int open_node(void)
{
	return open("/dev/tpmrs0", O_RDWR | O_NONBLOCK);
}

/* Objects made in @fd until the space is full (*err = 0) or a command fails (*err = errno). */
static int fill(int fd, int *err)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int made = 0;

	for (;;) {
		ssize_t n = write(fd, cmd, cmd_len);
		unsigned int rc;

		if (n < 0) {
			*err = errno;
			return made;
		}
		if (poll(&p, 1, 60000) != 1) {
			*err = ETIMEDOUT;
			return made;
		}
		n = read(fd, rsp, sizeof(rsp));
		if (n < 0) {
			*err = errno;
			return made;
		}
		if (n < 10) {
			*err = EPROTO;
			return made;
		}
		rc = (unsigned int)rsp[6] << 24 | rsp[7] << 16 | rsp[8] << 8 | rsp[9];
		if (rc == TPM_RC_OBJECT_MEMORY_RM) {
			*err = 0;
			return made;
		}
		if (rc != 0) {
			fprintf(stderr, "memcg_flood: rc 0x%x\n", rc);
			*err = EPROTO;
			return made;
		}
		made++;
	}
}

int main(int argc, char **argv)
{
	int spare, warm, err = 0, spare_err = 0, files = 0, objects = 0, spare_made, i;
	const char *where = "none";
	char path[4096], line[64];
	FILE *procs;

	if (argc != 3 || strlen(argv[2]) / 2 > sizeof(cmd))
		return 2;
	cmd_len = strlen(argv[2]) / 2;
	for (i = 0; i < (int)cmd_len; i++)
		sscanf(argv[2] + 2 * i, "%2hhx", &cmd[i]);
	snprintf(path, sizeof(path), "%s/cgroup.procs", argv[1]);
	procs = fopen(path, "w");
	if (!procs || fprintf(procs, "0\n") < 0 || fclose(procs))
		return perror("cgroup.procs"), 3;
	if (mlockall(MCL_CURRENT | MCL_FUTURE))
		return perror("mlockall"), 3;
	/* Once through every path of the flood, so that nothing new is touched later. */
	warm = open_node();
	spare = open_node();
	if (warm < 0 || spare < 0)
		return perror("open"), 3;
	if (fill(warm, &err) != 64 || err)
		return fprintf(stderr, "memcg_flood: warm-up: errno %d\n", err), 3;
	close(warm);
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 4;

	while (files < MAX_FILES) {
		int fd = open_node();

		if (fd < 0) {
			where = "open";
			err = errno;
			break;
		}
		fds[files++] = fd;
		objects += fill(fd, &err);
		if (err) {
			where = "command";
			break;
		}
	}
	spare_made = fill(spare, &spare_err);
	printf("%s %d %d %d %d %d\n", where, err, files, objects, spare_made, spare_err);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	for (i = 0; i < files; i++)
		close(fds[i]);
	close(spare);
	return 0;
}
