#include "registry.h"

#include <string.h>

static const Modality *const all[] = {&image_modality, &speech_modality, &text_modality};

const Modality *modality_find(const char *name)
{
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}

const char *modality_names(void)
{
    return "image|speech|text";
}
