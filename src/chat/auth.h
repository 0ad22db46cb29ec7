/* Passwords and device tokens: argon2id hashing and verification, token
 * generation and the SHA-256 under which a token is stored (libsodium does
 * the cryptography). Nothing here stores or logs a secret.
 * SPDX-License-Identifier: MIT */
#ifndef FB_AUTH_H
#define FB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_TOKEN_HEX 64
#define FB_PWHASH_MAX 128 /* crypto_pwhash_STRBYTES */

int fb_auth_init(void); /* sodium_init */
/* Slow (argon2id); call off the io loops. */
int fb_auth_hash_password(const char *pw, size_t len, uint64_t opslimit, size_t memlimit,
                          char out[FB_PWHASH_MAX]);
/* Verifies pw against hash; with hash NULL it burns the same time and
 * returns false, so that an unknown user is not told apart by timing. */
bool fb_auth_verify_password(const char *hash, const char *pw, size_t len, uint64_t opslimit,
                             size_t memlimit);
/* A new token: 32 random bytes as 64 hex characters, and its hash. */
void fb_auth_new_token(char hex[FB_TOKEN_HEX + 1], uint8_t hash[32]);
/* The stored hash of a presented token; FB_EBADTOKEN unless 64 hex chars. */
int fb_auth_token_hash(const char *hex, uint8_t hash[32]);

#endif
