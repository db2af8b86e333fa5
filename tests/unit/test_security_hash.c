/* pt_security_hash: the hashes `portico hash-password` prints, and the
 * command itself reading stdin. */
#include "pt_security_hash.h"
#include "pt_test.h"

#include <sodium.h>

#include <fcntl.h>
#include <unistd.h>

PT_CASE(hashes)
{
    char out[128];
    PT_CHECK_INT(pt_security_hash_password("pw", 2, out), 0);
    PT_CHECK(!strncmp(out, "$argon2id$v=19$", 15));
    PT_CHECK_INT(crypto_pwhash_str_verify(out, "pw", 2), 0);
    PT_CHECK(crypto_pwhash_str_verify(out, "pW", 2) != 0);
    PT_CHECK_INT(pt_security_hash_api_key("abc", 3, out), 0);
    /* BLAKE2b-256("abc") */
    PT_CHECK_STR(out, "blake2b:bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
}

/* Runs the command with input on stdin and its stdout in out; returns its
 * exit status. */
static int cli(int api_key, const char *input, char *out, size_t cap)
{
    char in_path[] = "/tmp/pt_test_hash_in.XXXXXX", out_path[] = "/tmp/pt_test_hash_out.XXXXXX";
    int in = mkstemp(in_path), outfd = mkstemp(out_path);
    if (in < 0 || outfd < 0) return -1;
    if (write(in, input, strlen(input)) != (ssize_t)strlen(input)) return -1;
    lseek(in, 0, SEEK_SET);
    fflush(stdout);
    int saved_in = dup(0), saved_out = dup(1);
    dup2(in, 0);
    dup2(outfd, 1);
    int status = pt_security_hash_password_cli(api_key);
    fflush(stdout);
    dup2(saved_in, 0);
    dup2(saved_out, 1);
    close(saved_in);
    close(saved_out);
    lseek(outfd, 0, SEEK_SET);
    ssize_t n = read(outfd, out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
    close(in);
    close(outfd);
    unlink(in_path);
    unlink(out_path);
    return status;
}

PT_CASE(command_reads_stdin)
{
    char out[256];
    /* from a pipe or a file: one line, no prompt, a CR before the LF dropped */
    PT_CHECK_INT(cli(1, "abc\r\n", out, sizeof out), 0);
    PT_CHECK_STR(out, "blake2b:bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319\n");
    PT_CHECK_INT(cli(1, "abc", out, sizeof out), 0); /* no newline at the end */
    PT_CHECK(!strncmp(out, "blake2b:bddd813c", 16));
    PT_CHECK_INT(cli(0, "pw\n", out, sizeof out), 0);
    PT_CHECK(!strncmp(out, "$argon2id$v=19$", 15));
    out[strcspn(out, "\n")] = '\0';
    PT_CHECK_INT(crypto_pwhash_str_verify(out, "pw", 2), 0);
    /* nothing to hash: an error, nothing printed */
    PT_CHECK_INT(cli(0, "", out, sizeof out), 1);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(cli(1, "\n", out, sizeof out), 1);
    PT_CHECK_STR(out, "");
}

int main(void)
{
    PT_RUN(hashes);
    PT_RUN(command_reads_stdin);
    return PT_TEST_DONE();
}
