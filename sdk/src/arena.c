/* Chained-block arenas for activations and the tape. */
#include "config.h"
#include <stdlib.h>
#include "core.h"

#define ARENA_ALIGN 64

void dfi_arena_init(struct dfi_arena *a, void *(*alloc)(void *, size_t), void (*free_fn)(void *, void *),
                    void *owner, size_t min_block)
{
	a->head = a->cur = NULL;
	a->alloc = alloc;
	a->free = free_fn;
	a->owner = owner;
	a->min_block = min_block;
}

static struct dfi_arena_block *block_new(struct dfi_arena *a, size_t size)
{
	struct dfi_arena_block *b = malloc(sizeof *b);
	if (!b)
		return NULL;
	b->mem = a->alloc(a->owner, size);
	if (!b->mem) {
		free(b);
		return NULL;
	}
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

void *dfi_arena_alloc(struct dfi_arena *a, size_t bytes)
{
	bytes = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (bytes == 0)
		bytes = ARENA_ALIGN;
	/* Later blocks may already exist from an earlier, larger step. */
	while (a->cur && a->cur->used + bytes > a->cur->size && a->cur->next) {
		a->cur = a->cur->next;
		a->cur->used = 0;
	}
	if (!a->cur || a->cur->used + bytes > a->cur->size) {
		size_t total = dfi_arena_bytes(a);
		size_t size = bytes > a->min_block ? bytes : a->min_block;
		if (size < total)
			size = total; /* grow geometrically */
		struct dfi_arena_block *b = block_new(a, size);
		if (!b)
			return NULL;
		if (a->cur)
			a->cur->next = b;
		else
			a->head = b;
		a->cur = b;
	}
	void *p = a->cur->mem + a->cur->used;
	a->cur->used += bytes;
	return p;
}

void dfi_arena_reset(struct dfi_arena *a)
{
	if (a->head && a->head->next) {
		/* Coalesce: one block as large as all of them. If that fails, keep
		 * the chain, which still works. */
		size_t total = dfi_arena_bytes(a);
		struct dfi_arena_block *one = block_new(a, total);
		if (one) {
			dfi_arena_release(a);
			a->head = one;
		}
	}
	for (struct dfi_arena_block *b = a->head; b; b = b->next)
		b->used = 0;
	a->cur = a->head;
}

void dfi_arena_release(struct dfi_arena *a)
{
	struct dfi_arena_block *b = a->head;
	while (b) {
		struct dfi_arena_block *next = b->next;
		a->free(a->owner, b->mem);
		free(b);
		b = next;
	}
	a->head = a->cur = NULL;
}

size_t dfi_arena_mark(const struct dfi_arena *a)
{
	size_t offset = 0;
	for (const struct dfi_arena_block *b = a->head; b && b != a->cur; b = b->next)
		offset += b->size;
	return a->cur ? offset + a->cur->used : 0;
}

int dfi_arena_offset(const struct dfi_arena *a, const void *p, size_t *offset)
{
	size_t base = 0;
	for (const struct dfi_arena_block *b = a->head; b; b = b->next) {
		const char *c = p;
		if (c >= b->mem && c < b->mem + b->size) {
			*offset = base + (size_t)(c - b->mem);
			return 1;
		}
		base += b->size;
	}
	return 0;
}

void dfi_arena_rewind(struct dfi_arena *a, size_t mark)
{
	size_t base = 0;
	for (struct dfi_arena_block *b = a->head; b; b = b->next) {
		if (mark <= base + b->size) {
			a->cur = b;
			b->used = mark - base;
			return;
		}
		base += b->size;
	}
}

size_t dfi_arena_bytes(const struct dfi_arena *a)
{
	size_t total = 0;
	for (const struct dfi_arena_block *b = a->head; b; b = b->next)
		total += b->size;
	return total;
}
