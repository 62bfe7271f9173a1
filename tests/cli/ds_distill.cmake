# Golden CLI test of ds-distill (included by tests/cli/CMakeLists.txt); teacher and student come from
# ds-tokenize, ds-pretrain and ds-sft, and the filtering is compared with ds-reward | ds-rejsample.
if(TARGET ds-distill AND TARGET ds-pretrain AND TARGET ds-tokenize AND TARGET ds-sft AND TARGET ds-reward
   AND TARGET ds-rejsample)
  add_test(NAME cli_ds_distill
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_distill.sh $<TARGET_FILE:ds-distill> $<TARGET_FILE:ds-pretrain>
                   $<TARGET_FILE:ds-tokenize> $<TARGET_FILE:ds-sft> $<TARGET_FILE:ds-reward>
                   $<TARGET_FILE:ds-rejsample>)
  set_tests_properties(cli_ds_distill PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=passive TIMEOUT 300)
endif()
