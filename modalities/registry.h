/* registry.h — the modalities this binary knows, by name. */
#ifndef D2V_REGISTRY_H
#define D2V_REGISTRY_H

#include "modality.h"

extern const Modality image_modality;
extern const Modality speech_modality;
extern const Modality text_modality;

/* NULL when unknown; names lists the known ones ("image|speech|text"). */
const Modality *modality_find(const char *name);
const char *modality_names(void);

#endif
