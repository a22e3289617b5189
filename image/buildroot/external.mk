include $(sort $(wildcard $(BR2_EXTERNAL_MONSERV_PATH)/package/*/*.mk))
