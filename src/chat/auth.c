/* argon2id password hashing and random device tokens, by libsodium.
 * Secrets are wiped from stack buffers after use and never logged.
 * SPDX-License-Identifier: MIT */
#include "chat/auth.h"

#include <sodium.h>
#include <string.h>

#include "common/fb.h"

int fb_auth_init(void)
{
    return sodium_init() < 0 ? FB_EINTERNAL : 0;
}

int fb_auth_hash_password(const char *pw, size_t len, uint64_t opslimit, size_t memlimit,
                          char out[FB_PWHASH_MAX])
{
    _Static_assert(crypto_pwhash_STRBYTES <= FB_PWHASH_MAX, "pwhash buffer");
    if (crypto_pwhash_str_alg(out, pw, len, opslimit, memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return FB_ENOMEM;
    return 0;
}

bool fb_auth_verify_password(const char *hash, const char *pw, size_t len, uint64_t opslimit,
                             size_t memlimit)
{
    if (!hash) {
        char dummy[FB_PWHASH_MAX];
        fb_auth_hash_password(pw, len, opslimit, memlimit, dummy);
        sodium_memzero(dummy, sizeof dummy);
        return false;
    }
    return crypto_pwhash_str_verify(hash, pw, len) == 0;
}

void fb_auth_new_token(char hex[FB_TOKEN_HEX + 1], uint8_t hash[32])
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    fb_hex_encode(raw, sizeof raw, hex);
    sodium_memzero(raw, sizeof raw);
    crypto_hash_sha256(hash, (const uint8_t *)hex, FB_TOKEN_HEX);
}

int fb_auth_token_hash(const char *hex, uint8_t hash[32])
{
    size_t n = strlen(hex);
    if (n != FB_TOKEN_HEX) return FB_EBADTOKEN;
    for (size_t i = 0; i < n; i++) {
        char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return FB_EBADTOKEN;
    }
    crypto_hash_sha256(hash, (const uint8_t *)hex, FB_TOKEN_HEX);
    return 0;
}
